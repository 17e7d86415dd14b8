"""The view's pages in a real headless Chromium (Debian package `chromium`), opened from disk.

Skipped on a machine without chromium; under CI=true a missing chromium fails (system_tools).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from chromium import Chromium
from system_tools import require_tool
from view_cases import CASES, EXPECTED, make_evaluation, make_prediction, make_run

from mammoseg.io import read_csv, write_bytes_atomic, write_csv_atomic
from mammoseg.manifest import MANIFEST_COLUMNS
from mammoseg.view import write_view
from mammoseg.view.site import COLUMNS, write_assets, write_data_js

pytestmark = pytest.mark.timeout(300)

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
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
    assert browser.wait_for("document.body.dataset.ready") == "1"
    assert browser.evaluate("document.body.dataset.caseId") == "tp_bad"
    assert browser.evaluate("document.getElementById('position').textContent") == "4 of 6"
    assert browser.evaluate("document.body.dataset.show") == "irp"  # the probability map is off at first
    assert non_blank(browser.screenshot())

    browser.key("r")
    assert browser.evaluate("document.body.dataset.show") == "ip"
    assert browser.evaluate("document.getElementById('button-ref').getAttribute('aria-pressed')") == "false"
    browser.key("m")
    assert browser.evaluate("document.body.dataset.show") == "ipm"
    browser.key("m")
    assert browser.evaluate("document.body.dataset.show") == "ip"

    browser.key("ArrowRight", navigates=True)  # next in the Dice-ascending list: tp_bad (0.08) -> tp_good
    assert browser.evaluate("document.body.dataset.caseId") == "tp_good"
    browser.wait_for("document.body.dataset.ready")
    assert browser.evaluate("document.body.dataset.show") == "ip"  # the layer choice travels with the case
    browser.key("ArrowLeft", navigates=True)
    assert browser.evaluate("document.body.dataset.caseId") == "tp_bad"
    browser.wait_for("document.body.dataset.ready")
    browser.key("v", navigates=True)  # both views of the patient
    assert browser.evaluate("document.body.dataset.page") == "patient"
    assert browser.wait_for("document.body.dataset.ready") == "1"
    browser.key("Escape", navigates=True)
    assert browser.evaluate("document.body.dataset.page") == "index"
    assert browser.evaluate(ROW_IDS)[0] == "fn_big"  # back to the list as it was sorted
    assert browser.errors(mark) == []


# ---------------------------------------------------------------------- the viewer, pixel by pixel

def value(image_id, row, col):
    """The 16-bit value view_cases.make_prediction wrote at (row, col) of `image_id`."""
    i, ref_box = list(CASES).index(image_id), CASES[image_id][3]
    if ref_box is not None and ref_box[0] <= row < ref_box[1] and ref_box[2] <= col < ref_box[3]:
        return 60000
    return (row + col) * 250 + 3000 * (i + 1)


def grey(v, c, w):
    """The window formula docs/view.md states."""
    return round(255 * min(1.0, max(0.0, (v - (c - w / 2)) / w)))


def open_case(browser, site, image_id, query=""):
    browser.load((site / "case.html").as_uri() + f"?id={image_id}{query}")
    assert browser.wait_for("document.body.dataset.ready") == "1"


def page_point(browser, row, col, view=0):
    """Page position (CSS px) of the centre of image pixel (row, col), from the view's own transform."""
    return browser.evaluate(f"""(() => {{ const v = MAMMOSEG_VIEWER.views[{view}], p = v.toScreen({col} + 0.5, {row} + 0.5),
        r = v.canvas.getBoundingClientRect(); return [r.left + p[0], r.top + p[1]]; }})()""")


def pixel_at(browser, layer, x, y, view=0):
    """RGBA the view's image or overlay canvas holds at page position (x, y)."""
    return browser.evaluate(f"""(() => {{ const v = MAMMOSEG_VIEWER.views[{view}], c = v.{layer},
        r = c.getBoundingClientRect();
        return Array.from(c.getContext('2d').getImageData(Math.floor({x} - r.left), Math.floor({y} - r.top), 1, 1).data); }})()""")


def near(rgba, expected, tolerance=2):
    """Canvas colours under partial opacity come back through premultiplied alpha: ±`tolerance` per channel."""
    return rgba[3] == expected[3] and all(abs(a - b) <= tolerance for a, b in zip(rgba[:3], expected[:3]))


def window_state(browser):
    return browser.evaluate("[MAMMOSEG_VIEWER.c, MAMMOSEG_VIEWER.w]")


def test_dragging_sets_window_and_level_on_the_16_bit_values(browser, site):
    mark = len(browser.events)
    open_case(browser, site, "tp_bad", "&show=i")
    points = {(50, 5): page_point(browser, 50, 5), (60, 60): page_point(browser, 60, 60)}
    c, w = window_state(browser)
    assert (c, w) == (65535 / 2, 65535)  # the first preset: the whole 16-bit range predict read
    for (row, col), (x, y) in points.items():
        assert pixel_at(browser, "canvas", x, y) == [grey(value("tp_bad", row, col), c, w)] * 3 + [255]

    full_low, full_high = 6000, 60000  # the values present: (0 + 0)·250 + 6000 and the reference square
    step = (full_high - full_low) / 500
    start = page_point(browser, 32, 32)
    browser.drag(start, (start[0] + 100, start[1] - 50), button="right")  # → wider, ↑ lower level
    c, w = window_state(browser)
    assert (c, w) == (pytest.approx(65535 / 2 - 50 * step), pytest.approx(65535 + 100 * step))
    for (row, col), (x, y) in points.items():
        assert pixel_at(browser, "canvas", x, y)[0] == grey(value("tp_bad", row, col), c, w)
    browser.drag(start, (start[0] - 200, start[1] + 30), button="left", modifiers=("shift",))  # Shift+drag, too
    c2, w2 = window_state(browser)
    assert (c2, w2) == (pytest.approx(c + 30 * step), pytest.approx(w - 200 * step))
    x, y = points[(60, 60)]
    assert pixel_at(browser, "canvas", x, y)[0] == grey(value("tp_bad", 60, 60), c2, w2)

    browser.key("w")  # next preset: the full range of the values present
    assert window_state(browser) == [(full_low + full_high) / 2, full_high - full_low]
    x, y = points[(50, 5)]
    assert pixel_at(browser, "canvas", x, y)[0] == grey(value("tp_bad", 50, 5), (full_low + full_high) / 2, full_high - full_low)
    browser.key("x")  # reset
    assert window_state(browser) == [65535 / 2, 65535]
    assert browser.evaluate("document.getElementById('window-text').textContent").startswith("window 0 – 65535")
    assert browser.errors(mark) == []


def test_zoom_keeps_the_mask_on_its_image_pixel(browser, site):
    mark = len(browser.events)
    open_case(browser, site, "tp_bad", "&show=ip")
    browser.key("o")  # fill: every predicted pixel coloured
    pred_rgb = [0xE6, 0x9F, 0x00, 255]
    x, y = page_point(browser, 30, 35)  # inside the predicted square (rows and columns 25..39)
    c, w = window_state(browser)
    expect_grey = grey(value("tp_bad", 30, 35), c, w)
    assert pixel_at(browser, "overlay", x, y) == pred_rgb
    assert pixel_at(browser, "canvas", x, y)[0] == expect_grey
    zoom0 = browser.evaluate("MAMMOSEG_VIEWER.zoom")
    browser.wheel(x, y, -300)  # zoom in about the pointer
    zoom1 = browser.evaluate("MAMMOSEG_VIEWER.zoom")
    assert zoom1 == pytest.approx(zoom0 * np.exp(0.6))
    # the same image pixel (its own grey value) and the mask stay under the pointer
    assert pixel_at(browser, "canvas", x, y)[0] == expect_grey
    assert pixel_at(browser, "overlay", x, y) == pred_rgb
    for row, col in ((25, 25), (39, 39)):  # the square's corners, wherever they now are on screen
        cx, cy = page_point(browser, row, col)
        assert pixel_at(browser, "overlay", cx, cy) == pred_rgb
        assert pixel_at(browser, "canvas", cx, cy)[0] == grey(value("tp_bad", row, col), c, w)
    ox, oy = page_point(browser, 24, 24)  # just outside the mask: not coloured
    assert pixel_at(browser, "overlay", ox, oy)[3] == 0
    # drag pans: what was at (x, y) is now 40 px to the right
    browser.drag((x, y), (x + 40, y))
    assert pixel_at(browser, "canvas", x + 40, y)[0] == expect_grey
    browser.key("+")
    assert browser.evaluate("MAMMOSEG_VIEWER.zoom") == pytest.approx(zoom1 * 1.25)
    browser.key("1")
    assert browser.evaluate("MAMMOSEG_VIEWER.views[0].scale()") == pytest.approx(1.0)
    browser.key("0")
    assert browser.evaluate("[MAMMOSEG_VIEWER.zoom, MAMMOSEG_VIEWER.cx, MAMMOSEG_VIEWER.cy]") == [1, 0.5, 0.5]
    assert browser.errors(mark) == []


def test_toggles_opacity_and_probability_map_change_what_is_drawn(browser, site):
    mark = len(browser.events)
    open_case(browser, site, "tp_bad")
    legend = browser.evaluate("document.getElementById('legend').textContent")
    assert legend == "referenceprediction"  # names, not colour codes
    # the first shown row of the predicted square (rows 25..39): on its 2-pixel outline
    x = page_point(browser, 32, 35)[0]
    top = browser.evaluate("(() => { const v = MAMMOSEG_VIEWER.views[0], r = v.canvas.getBoundingClientRect();"
                           " return r.top + Math.ceil(v.origin()[1] + 25 * v.scale() - 0.5); })()")
    edge, inside = (x, top + 0.5), page_point(browser, 33, 35)
    assert pixel_at(browser, "overlay", *edge) == [0xE6, 0x9F, 0x00, 255]
    assert pixel_at(browser, "overlay", *inside)[3] == 0  # outline: the inside stays clear
    browser.key("p")
    assert pixel_at(browser, "overlay", *edge)[3] == 0
    browser.key("p")
    # the opacity slider, clicked at 40 % of its width as a person would
    box = browser.evaluate("(() => { const r = document.getElementById('opacity').getBoundingClientRect();"
                           " return [r.left, r.top, r.width, r.height]; })()")
    browser.drag((box[0] + 0.4 * box[2], box[1] + box[3] / 2), (box[0] + 0.4 * box[2], box[1] + box[3] / 2), steps=1)
    opacity = int(browser.evaluate("document.getElementById('opacity').value"))
    assert 20 < opacity < 60
    assert near(pixel_at(browser, "overlay", *edge), [0xE6, 0x9F, 0x00, round(255 * opacity / 100)])
    browser.evaluate("(() => { const s = document.getElementById('mode'); s.value = 'fill';"
                     " s.dispatchEvent(new Event('change')); })()")
    assert near(pixel_at(browser, "overlay", *inside), [0xE6, 0x9F, 0x00, round(255 * opacity / 100)])
    browser.key("o")  # back to outline
    browser.key("m")  # probability map: viridis under the outline, its opacity growing with p
    assert browser.evaluate("document.getElementById('prob-scale').hidden") is False
    assert browser.evaluate("document.getElementById('threshold-label').textContent") == "threshold 0.5"
    p = round(60000 / 65535 * 255)
    colour = browser.evaluate(f"MAMMOSEG_VIEW.prob_colours[{p}]")
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    assert near(pixel_at(browser, "overlay", *inside), rgb + [round((0.25 + 0.6 * p / 255) * round(255 * opacity / 100))])
    assert pixel_at(browser, "overlay", *page_point(browser, 50, 5))[3] == 0  # p = 0.015: clear
    assert browser.errors(mark) == []


def test_patient_page_shows_every_view_linked(browser, site):
    mark = len(browser.events)
    browser.load((site / "patient.html").as_uri() + "?patient=p1")
    assert browser.wait_for("document.body.dataset.ready") == "1"
    cells = browser.evaluate("Array.from(document.querySelectorAll('.cell[data-id]')).map(c => c.dataset.id)")
    assert cells == ["tp_good", "tp_bad"]  # CC above MLO, both of the left breast
    assert browser.evaluate("Array.from(document.querySelectorAll('.cell.empty')).map(c => c.textContent)") == [
        "R CC: no image", "R MLO: no image"]  # the right breast's places stay, on the left
    assert browser.evaluate("document.querySelectorAll('.cell canvas.image-canvas').length") == 2
    areas = browser.evaluate("Array.from(document.querySelectorAll('.cell-masses tbody tr td:nth-child(2)'))"
                             ".map(t => t.textContent)")
    assert areas == ["360 px", "225 px"]  # one predicted mass each, beside its image
    start = page_point(browser, 32, 32, view=1)
    browser.drag(start, (start[0] + 50, start[1]), button="right")  # on the MLO: both views follow
    c, w = window_state(browser)
    assert w == pytest.approx(65535 + 50 * (60000 - 6000) / 500)
    for view, image_id in enumerate(cells):
        x, y = page_point(browser, 50, 5, view=view)
        assert pixel_at(browser, "canvas", x, y, view=view)[0] == grey(value(image_id, 50, 5), c, w)
    browser.key("+")
    scales = browser.evaluate("MAMMOSEG_VIEWER.views.map(v => v.scale() / v.fitScale())")
    assert scales == [pytest.approx(1.25)] * 2
    assert browser.errors(mark) == []


def test_pages_open_with_the_network_off(browser, site):
    browser.send("Network.enable")
    browser.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": -1})
    try:
        mark = len(browser.events)
        open_case(browser, site, "tp_good")
        browser.load((site / "patient.html").as_uri() + "?patient=p1")
        assert browser.wait_for("document.body.dataset.ready") == "1"
        browser.load((site / "index.html").as_uri())
        assert browser.evaluate(f"{ROW_IDS}.length") == len(CASES)
        assert browser.errors(mark) == []
    finally:
        browser.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                          "uploadThroughput": -1})


def test_export_downloads_the_filtered_list_as_csv(browser, site):
    mark = len(browser.events)
    browser.load((site / "index.html").as_uri() + "?outcome=FN,TP&sort=dice&order=desc")
    browser.evaluate("document.getElementById('export').addEventListener('click', e => e.preventDefault())")
    browser.evaluate("document.getElementById('export').click()")
    text = browser.evaluate("fetch(document.getElementById('export').href).then(r => r.text())")
    lines = text.split("\r\n")
    assert lines[0].startswith("id,patient,view,laterality,study_date,outcome,dice,iou,ref_px,pred_px")
    ids = [line.split(",")[0] for line in lines[1:] if line]
    assert ids == browser.evaluate(ROW_IDS) == ["tp_good", "tp_bad", "fn_big", "fn_small"]
    row = dict(zip(lines[0].split(","), lines[2].split(",")))
    assert (row["id"], row["pred_px"], row["ref_px"], row["n_masses"]) == ("tp_bad", "225", "400", "1")
    assert browser.errors(mark) == []


def test_screenshots_for_the_docs(browser, site, tmp_path):
    """Index, case and patient pages as the docs show them (docs/img/ with MAMMOSEG_DOCS_SCREENSHOTS=1)."""
    out = DOCS_IMG if os.environ.get("MAMMOSEG_DOCS_SCREENSHOTS") == "1" else tmp_path
    mark = len(browser.events)
    shots = {"view-index.png": (site / "index.html").as_uri() + "?sort=dice",
             "view-case.png": (site / "case.html").as_uri() + "?id=tp_bad&show=irpm",
             "view-patient.png": (site / "patient.html").as_uri() + "?patient=p1"}
    for name, url in shots.items():
        browser.load(url)
        if "index" in name:
            browser.wait_for("Array.from(document.querySelectorAll('#case-rows img')).every(i => i.complete)")
        else:
            browser.wait_for("document.body.dataset.ready")
        png = browser.screenshot(scale=0.75)
        assert non_blank(png) and len(png) <= 200_000, (name, len(png))
        write_bytes_atomic(out / name, png)
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
                  "prob": 0, "w": 16, "h": 16, "tw": 256, "th": 200, "ref_px": i, "pred_px": i, "ref_mm2": None,
                  "pred_mm2": None, "study_date": "2024-01-02", "prob_max": None, "n_masses": 1}
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
    size = "[document.querySelector('#case-rows img').width, document.querySelector('#case-rows img').height]"
    assert browser.evaluate(size) == [128, 100]  # 256 × 200 thumbnails shown at half size
    browser.evaluate("document.getElementById('large-thumbs').click()")
    assert browser.evaluate(size) == [256, 200]
    assert browser.evaluate("location.search") == "?outcome=FN&per=50&thumbs=large&page=3"
    assert browser.errors(mark) == []
