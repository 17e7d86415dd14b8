"""The view's pages in a real headless Chromium (Debian package `chromium`), opened from disk.

Skipped on a machine without chromium; under CI=true a missing chromium fails (system_tools).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from chromium import Chromium
from system_tools import require_tool
from view_cases import CASES, EXPECTED, make_evaluation, make_prediction, make_run

from mammoseg.io import read_csv, write_csv_atomic
from mammoseg.manifest import MANIFEST_COLUMNS
from mammoseg.view import write_view
from mammoseg.view.site import COLUMNS, write_assets, write_data_js

pytestmark = pytest.mark.timeout(300)

ROW_IDS = "Array.from(document.querySelectorAll('#case-rows tr')).map(r => r.dataset.id)"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = require_tool("chromium", "chromium")
    chrome = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    _, _, ev = make_evaluation(root)
    return write_view(ev, progress=False).parent


def non_blank(png: bytes) -> bool:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return image is not None and len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_index_lists_every_image_and_draws(browser, site):
    mark = len(browser.events)
    browser.load((site / "index.html").as_uri())
    assert browser.evaluate(f"{ROW_IDS}.length") == len(CASES)
    assert sorted(browser.evaluate(ROW_IDS)) == sorted(CASES)
    assert browser.evaluate("document.getElementById('count').textContent") == f"{len(CASES)} of {len(CASES)} images"
    # every thumbnail on the page is lazy and has loaded from disk
    assert browser.evaluate("Array.from(document.images).filter(i => i.closest('#case-rows'))"
                            ".every(i => i.loading === 'lazy')")
    assert browser.wait_for("Array.from(document.querySelectorAll('#case-rows img'))"
                            ".every(i => i.complete && i.naturalWidth > 0)")
    summary = browser.evaluate("document.getElementById('summary-list').textContent")
    assert "TP / FN / FP / TN2 / 2 / 1 / 1" in summary
    assert "95% CI of mean Dice (patients resampled)[" in summary  # every image names its patient
    assert non_blank(browser.screenshot())
    assert browser.errors(mark) == []


def test_url_sort_puts_the_lowest_dice_first(browser, site):
    mark = len(browser.events)
    browser.load((site / "index.html").as_uri() + "?sort=dice&order=asc")
    order = browser.evaluate(ROW_IDS)
    expected = sorted(EXPECTED, key=lambda i: (EXPECTED[i][0], i))
    assert order == expected
    first_dice = browser.evaluate("document.querySelector('#case-rows tr td[data-key=dice]').title")
    assert float(first_dice) == min(e[0] for e in EXPECTED.values())
    browser.load((site / "index.html").as_uri() + "?sort=dice&order=desc")
    assert browser.evaluate(ROW_IDS)[0] == "tn"
    assert browser.errors(mark) == []


def test_url_filters_show_exactly_those_cases(browser, site):
    mark = len(browser.events)
    browser.load((site / "index.html").as_uri() + "?outcome=FN")
    assert sorted(browser.evaluate(ROW_IDS)) == sorted(i for i, e in EXPECTED.items() if e[2] == "FN")
    assert browser.evaluate("document.getElementById('outcome-FN').checked") is True
    browser.load((site / "index.html").as_uri() + "?dmin=0.5&dmax=0.99")
    assert browser.evaluate(ROW_IDS) == ["tp_good"]
    # ticking FP as well (a click, as a user would) widens the FN filter and writes it into the URL
    browser.load((site / "index.html").as_uri() + "?outcome=FN")
    browser.evaluate("document.getElementById('outcome-FP').click()")
    assert sorted(browser.evaluate(ROW_IDS)) == ["fn_big", "fn_small", "fp"]
    assert browser.evaluate("location.search") == "?outcome=FN%2CFP"
    browser.evaluate("document.querySelector('th[data-key=iou] button').click()")
    assert browser.evaluate("location.search") == "?sort=iou&outcome=FN%2CFP"
    assert browser.errors(mark) == []


def test_case_page_keys_toggle_layers_and_walk_the_list(browser, site):
    mark = len(browser.events)
    base = (site / "case.html").as_uri()
    browser.load(base + "?id=tp_bad&sort=dice&order=asc")
    assert browser.evaluate("document.body.dataset.caseId") == "tp_bad"
    assert browser.evaluate("document.getElementById('position').textContent") == "4 of 6"
    layer_on = "document.getElementById('layer-{}').dataset.on"
    assert [browser.evaluate(layer_on.format(n)) for n in ("image", "ref", "pred", "prob")] == ["1"] * 4
    assert browser.wait_for("Array.from(document.querySelectorAll('#stage img')).every(i => i.complete && i.naturalWidth > 0)")
    assert non_blank(browser.screenshot())

    browser.key("r")
    assert browser.evaluate(layer_on.format("ref")) == "0" and browser.evaluate(layer_on.format("pred")) == "1"
    browser.key("m")
    assert browser.evaluate(layer_on.format("prob")) == "0"
    browser.key("m")
    assert browser.evaluate(layer_on.format("prob")) == "1"

    browser.key("ArrowRight", navigates=True)  # next in the Dice-ascending list: tp_bad (0.08) -> tp_good
    assert browser.evaluate("document.body.dataset.caseId") == "tp_good"
    assert browser.evaluate(layer_on.format("ref")) == "0"  # the layer choice travels with the case
    browser.key("ArrowLeft", navigates=True)
    assert browser.evaluate("document.body.dataset.caseId") == "tp_bad"
    browser.key("Escape", navigates=True)
    assert browser.evaluate("document.body.dataset.page") == "index"
    assert browser.evaluate(ROW_IDS)[0] == "fn_big"  # back to the list as it was sorted
    assert browser.errors(mark) == []


def test_run_page_shows_learning_curves_and_table2(browser, tmp_path):
    run, _ = make_run(tmp_path)
    index = write_view(run, progress=False)
    mark = len(browser.events)
    browser.load(index.as_uri())
    assert browser.evaluate(f"{ROW_IDS}.length") == len(CASES)
    assert browser.wait_for("document.getElementById('learning-curves').naturalWidth > 0")
    cells = browser.evaluate("Array.from(document.querySelectorAll('#run table')[0].rows[1].cells).map(c => c.textContent)")
    assert cells[:4] == ["hand-made", "ResNet22-UNet", "none (random init)", "6"]
    assert browser.evaluate("document.querySelectorAll('#run table')[1].tBodies[0].rows.length") == 8  # the paper's
    assert browser.evaluate("document.getElementById('jump').hidden") is False
    settings = browser.evaluate("document.getElementById('run-settings').textContent")
    assert "64 px (manifest.csv)" in settings and "The paper's 512 px numbers are not comparable with run" in settings
    assert browser.errors(mark) == []


def test_areas_are_in_mm2_when_every_pixel_spacing_is_known(browser, site, tmp_path):
    heading = "document.querySelector('th[data-key={}] button').textContent"
    browser.load((site / "index.html").as_uri())
    assert [browser.evaluate(heading.format(k)) for k in ("ref_area", "pred_area")] == ["reference px", "predicted px"]

    data, pred = make_prediction(tmp_path)
    rows = read_csv(data / "manifest.csv")
    for row in rows:
        row["pixel_spacing"] = "0.1\\0.1"  # 64 px prepared from 64 px: 0.01 mm² a pixel
    write_csv_atomic(data / "manifest.csv", rows, MANIFEST_COLUMNS)
    index = write_view(pred, tmp_path / "site", progress=False)
    mark = len(browser.events)
    browser.load(index.as_uri() + "?sort=ref_area&order=desc")
    headings = [browser.evaluate(heading.format(k)) for k in ("ref_area", "pred_area")]
    assert headings == ["reference mm²", "predicted mm²"]
    assert browser.evaluate(ROW_IDS)[:2] == ["fn_big", "tp_bad"]  # 16 mm², then 4 mm² (tp_bad before tp_good by id)
    assert browser.evaluate("document.querySelector('#case-rows tr td[data-key=ref_area]').textContent") == "16"
    browser.load((tmp_path / "site" / "case.html").as_uri() + "?id=tp_bad")
    facts = browser.evaluate("Array.from(document.querySelectorAll('#facts dd')).map(d => d.textContent)")
    assert "400 px (4 mm²)" in facts and "225 px (2.25 mm²)" in facts
    assert browser.errors(mark) == []


def write_big_site(out, n=10_000, lowest=7321):
    """A site of `n` cases (one tiny thumbnail file each), without the cost of drawing them."""
    rng = np.random.default_rng(0)
    dice = rng.uniform(0.05, 1.0, n).round(6)
    dice[lowest] = 0.001
    ok, png = cv2.imencode(".png", np.full((16, 16), 128, np.uint8))
    (out / "thumbs").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"img{i:05d}"
        (out / "thumbs" / f"{name}.png").write_bytes(png.tobytes())
        values = {"id": name, "f": name, "patient": f"p{i // 4}", "view": "CC", "laterality": "L",
                  "outcome": ("TP", "FN", "FP", "TN")[i % 4], "dice": float(dice[i]), "iou": float(dice[i] / (2 - dice[i])),
                  "ref_area": i, "pred_area": i, "n_ref_lesions": 1, "n_detected": 1, "n_fp": 0, "img": 1, "ref": 1,
                  "prob": 0, "w": 16, "h": 16, "tw": 128, "th": 128, "ref_px": i, "pred_px": i, "ref_mm2": None,
                  "pred_mm2": None}
        rows.append([values[c] for c in COLUMNS])
    write_data_js(out, {"format": 1, "version": "test", "kind": "evaluation", "source": "10,000 cases", "folders": {},
                        "metrics_from": "evaluation", "summary": None, "run": None, "max_side": 2048,
                        "colours": {"reference": "#0072B2", "prediction": "#E69F00"}, "columns": list(COLUMNS),
                        "rows": rows})
    write_assets(out)
    return [f"img{i:05d}" for i in range(n)], dice


def test_ten_thousand_images_render_one_page_lazily(browser, tmp_path):
    ids, dice = write_big_site(tmp_path)
    index = (tmp_path / "index.html").as_uri()
    mark = len(browser.events)
    browser.load(index)
    assert browser.evaluate(f"{ROW_IDS}.length") == 100  # a page, not 10,000 rows
    assert browser.evaluate("document.getElementById('page-info').textContent") == "page 1 of 100"
    assert browser.evaluate("document.getElementById('count').textContent") == "10000 of 10000 images"
    # lazy: the first row's thumbnail loads, rows far below the window have not been fetched
    assert browser.wait_for("document.querySelector('#case-rows img').naturalWidth > 0")
    loaded = browser.evaluate("Array.from(document.querySelectorAll('#case-rows img')).filter(i => i.complete && i.naturalWidth > 0).length")
    assert 0 < loaded < 100
    browser.evaluate("document.querySelector('#case-rows tr:last-child').scrollIntoView()")
    assert browser.wait_for("document.querySelector('#case-rows tr:last-child img').naturalWidth > 0")

    browser.load(index + "?sort=dice&order=asc")
    assert browser.evaluate(ROW_IDS)[:2] == [ids[int(np.argmin(dice))], ids[int(np.argsort(dice, kind="stable")[1])]]
    browser.load(index + "?outcome=FN&per=50&page=3")
    page = browser.evaluate(ROW_IDS)
    assert page == [ids[i] for i in range(1, len(ids), 4)][100:150]
    assert browser.evaluate("document.getElementById('page-info').textContent") == "page 3 of 50"
    assert browser.errors(mark) == []
