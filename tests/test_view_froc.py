"""`mammoseg view` shows the evaluation's FROC: data.js's `froc`, figures/froc.png, and the index page
in a real headless Chromium (skipped without one, as in test_view_browser.py)."""

from __future__ import annotations

import json

import pytest
from view_cases import make_evaluation, make_prediction

from mammoseg.view import write_view


def load_data(out):
    text = (out / "data.js").read_text(encoding="utf-8")
    return json.loads(text[len("window.MAMMOSEG_VIEW = "):-2])


def test_data_js_carries_the_evaluations_froc_and_its_figure(tmp_path):
    _, _, ev = make_evaluation(tmp_path)
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["froc"] is not None  # the hand-made prediction saved prob/
    out = write_view(ev, progress=False).parent
    data = load_data(out)
    assert data["froc"] == {**summary["froc"], "figure": "figures/froc.png"}
    assert (out / "figures" / "froc.png").is_file()


def test_no_froc_without_probability_maps_or_evaluation(tmp_path):
    _, _, ev = make_evaluation(tmp_path / "e", with_prob=False)
    assert load_data(write_view(ev, progress=False).parent)["froc"] is None
    _, pred = make_prediction(tmp_path / "p")  # probabilities but no evaluation: nothing to draw
    out = write_view(pred, progress=False).parent
    assert load_data(out)["froc"] is None and not (out / "figures" / "froc.png").exists()


@pytest.mark.timeout(300)
def test_index_page_shows_the_froc_curve_and_numbers(tmp_path):
    from chromium import Chromium
    from system_tools import require_tool

    binary = require_tool("chromium", "chromium")
    _, _, ev = make_evaluation(tmp_path)
    froc = json.loads((ev / "summary.json").read_text())["froc"]
    index = write_view(ev, progress=False)
    browser = Chromium(binary, tmp_path / "chromium-profile")
    try:
        mark = len(browser.events)
        browser.load(index.as_uri())
        assert browser.wait_for("document.getElementById('froc-curve').naturalWidth > 0")
        items = browser.evaluate("Array.from(document.querySelectorAll('#froc-list div'))"
                                 ".map(d => [d.querySelector('dt').textContent, d.querySelector('dd').textContent])")
        assert items[0] == ["mean sensitivity (7 operating points)", f"{froc['mean_sensitivity']:.3f}"]
        assert items[1:] == [[f"sensitivity at {k} FP/image", f"{v:.3f}"] for k, v in froc["operating_points"].items()]
        assert browser.errors(mark) == []
    finally:
        browser.close()
