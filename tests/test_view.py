"""`mammoseg view`: the data table written into data.js, the pictures, and the folder rules.

The pages themselves are tested in a real browser in test_view_browser.py.
"""

from __future__ import annotations

import base64
import json
import zlib

import cv2
import numpy as np
import pytest
from view_cases import CASES, EXPECTED, S, make_evaluation, make_prediction, make_run, rect

from mammoseg.cli import main
from mammoseg.evaluation.scoring import evaluate_folders
from mammoseg.io import read_png, write_png
from mammoseg.view import write_view
from mammoseg.folders import MARKER
from mammoseg.view.casedata import measure_masses, pack_uint16, unpack_uint16
from mammoseg.view.site import file_names, markdown_blocks


def load_data(out):
    text = (out / "data.js").read_text(encoding="utf-8")
    prefix = "window.MAMMOSEG_VIEW = "
    assert text.startswith(prefix) and text.endswith(";\n")
    data = json.loads(text[len(prefix):-2])
    data["cases"] = {r[0]: dict(zip(data["columns"], r)) for r in data["rows"]}
    return data


def test_data_table_of_an_evaluation_is_exact(tmp_path, capsys):
    data_dir, pred, ev = make_evaluation(tmp_path)
    assert main(["view", str(ev)]) == 0
    out = ev / "view"
    assert capsys.readouterr().out.strip() == f"view: {out / 'index.html'}"
    data = load_data(out)
    assert (data["kind"], data["metrics_from"]) == ("evaluation", "evaluation")
    assert data["folders"] == {"pred": str(pred), "eval": str(ev), "data": str(data_dir), "ref": None}
    assert list(data["cases"]) == list(CASES)  # per_image.csv's order
    for image_id, (dice, iou, outcome, ref_px, pred_px) in EXPECTED.items():
        c = data["cases"][image_id]
        # per_image.csv keeps 6 decimals; view passes them on unchanged
        assert (c["dice"], c["iou"]) == (round(dice, 6), round(iou, 6)), image_id
        assert (c["outcome"], c["ref_area"], c["pred_area"]) == (outcome, ref_px, pred_px), image_id
        patient, view, side = CASES[image_id][:3]
        assert (c["patient"], c["view"], c["laterality"]) == (patient, view, side)
        assert (c["img"], c["ref"], c["prob"], c["w"], c["h"], c["tw"], c["th"]) == (1, 1, 1, S, S, S, S)
        assert (out / "full" / f"{image_id}.js").is_file()
        assert c["study_date"] == "" and c["n_masses"] == (0 if CASES[image_id][4] is None else 1)
        assert c["prob_max"] == (round(60000 / 65535, 3) if CASES[image_id][4] is not None else round(1000 / 65535, 3))
    assert (data["cases"]["tp_bad"]["n_detected"], data["cases"]["tp_bad"]["n_fp"]) == (0, 1)  # IoU 1/24 < 0.2
    summary = json.loads((ev / "summary.json").read_text())
    assert data["summary"] == summary
    assert data["colours"] == {"reference": "#0072B2", "prediction": "#E69F00"}
    assert data["threshold"] == 0.5 and len(data["prob_colours"]) == 256 and data["prob_colours"][0] == "#440154"


def load_case_script(out, name):
    """full/<name>.js: the payload, its arrays unpacked as the page unpacks them."""
    text = (out / "full" / f"{name}.js").read_text(encoding="utf-8")
    prefix = f'MAMMOSEG_CASE("{name}", '
    assert text.startswith(prefix) and text.endswith(");\n")
    payload = json.loads(text[len(prefix):-3])
    shape = (payload["h"], payload["w"])
    if payload["pixels"] is not None:
        payload["pixels"] = unpack_uint16(payload["pixels"], shape)
    for key in ("ref", "pred", "prob"):
        if payload[key] is not None:
            payload[key] = np.frombuffer(zlib.decompress(base64.b64decode(payload[key])), np.uint8).reshape(shape)
    return payload


def test_thumbnail_shows_both_contours_in_their_colours(tmp_path):
    _, pred, ev = make_evaluation(tmp_path)
    write_view(ev, progress=False)
    rgb = cv2.cvtColor(cv2.imread(str(ev / "view" / "thumbs" / "tp_bad.png")), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (S, S, 3)  # a 64-pixel image is not enlarged for its thumbnail
    assert tuple(rgb[10, 20]) == (0x00, 0x72, 0xB2)  # top edge of the reference square (rows 10..29)
    assert tuple(rgb[39, 30]) == (0xE6, 0x9F, 0x00)  # bottom edge of the predicted square (rows 25..39)


def test_case_script_holds_the_16_bit_pixels_masks_and_probability_exactly(tmp_path):
    data_dir, _, ev = make_evaluation(tmp_path)
    write_view(ev, progress=False)
    case = load_case_script(ev / "view", "tp_bad")
    image = read_png(data_dir / "images" / "tp_bad.png")
    assert image.dtype == np.uint16 and np.array_equal(case["pixels"], image)  # every 16-bit value, unchanged
    assert (case["w"], case["h"], case["top"], case["spacing"]) == (S, S, 65535, None)
    assert np.array_equal(case["ref"], rect(CASES["tp_bad"][3]) // 255)
    assert np.array_equal(case["pred"], rect(CASES["tp_bad"][4]) // 255)
    assert set(np.unique(case["prob"])) == {round(1000 / 65535 * 255), round(60000 / 65535 * 255)}
    names = [p["name"] for p in case["presets"]]
    assert names == ["as prepared", "full range", "dense breast"]
    assert (case["presets"][1]["low"], case["presets"][1]["high"]) == (int(image.min()), int(image.max()))
    breast = image[image > image.min()]
    assert case["presets"][2]["low"] == round(float(np.percentile(breast, 50)))
    # the 15×15 predicted square: 225 px, corner to corner 15·√2, mean probability 60000/65535
    assert case["masses"] == [{"n": 1, "area_px": 225, "feret_px": round(15 * 2 ** 0.5, 2), "box": [25, 25, 40, 40],
                               "area_mm2": None, "feret_mm": None, "prob_mean": round(60000 / 65535, 3)}]


def test_pack_uint16_round_trips_every_value():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 65536, (7, 13), dtype=np.uint16)
    image[0, :4] = (65535, 0, 65535, 1)  # differences that wrap around
    assert np.array_equal(unpack_uint16(pack_uint16(image), image.shape), image)


def test_measurements_of_each_mass_use_the_pixel_spacing():
    pred = np.zeros((40, 50), bool)
    pred[2:22, 5:15] = True  # 20 rows × 10 columns
    pred[30, 40] = True  # a single pixel
    prob = np.where(pred, 0.8, 0.1).astype(np.float32)
    prob[2, 5] = 0.2
    masses = measure_masses(pred, prob, (0.1, 0.2))  # rows 0.1 mm, columns 0.2 mm
    assert [m["n"] for m in masses] == [1, 2] and [m["area_px"] for m in masses] == [200, 1]
    big, dot = masses
    assert big["area_mm2"] == round(200 * 0.02, 2) and big["feret_mm"] == round(np.hypot(20 * 0.1, 10 * 0.2), 2)
    assert big["feret_px"] == round(np.hypot(20, 10), 2) and big["box"] == [5, 2, 15, 22]
    assert big["prob_mean"] == round((199 * 0.8 + 0.2) / 200, 3)
    assert (dot["area_mm2"], dot["feret_mm"], dot["feret_px"]) == (0.02, round(np.hypot(0.1, 0.2), 2), 1.41)
    assert measure_masses(pred, None, None)[0]["area_mm2"] is None


def test_max_side_shrinks_and_full_resolution_keeps_every_pixel(tmp_path, capsys):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref, pred = np.zeros((128, 96), np.uint8), np.zeros((128, 96), np.uint8)
    ref[20:60, 10:50] = 255
    pred[100, 70] = 255  # one pixel: it must not vanish when shrunk
    write_png(ref_dir / "a.png", ref)
    write_png(pred_dir / "a.png", pred)
    evaluate_folders(pred_dir, ref_dir, tmp_path / "eval", progress=False)
    assert main(["view", str(tmp_path / "eval"), "--out", str(tmp_path / "small"), "--max-side", "64"]) == 0
    small = load_case_script(tmp_path / "small", "a")
    assert (small["w"], small["h"], small["grid_w"], small["grid_h"]) == (48, 64, 96, 128)
    assert small["pred"].sum() == 1 and small["pred"][50, 35] == 1
    assert small["ref"].sum() == 20 * 20 and small["ref"][10:30, 5:25].all()
    assert main(["view", str(tmp_path / "eval"), "--out", str(tmp_path / "full"), "--full-resolution"]) == 0
    full = load_case_script(tmp_path / "full", "a")
    assert (full["w"], full["h"]) == (96, 128) and np.array_equal(full["ref"], ref // 255)
    assert load_data(tmp_path / "full")["max_side"] is None and load_data(tmp_path / "small")["max_side"] == 64


def test_prediction_folder_without_evaluation_is_scored_here(tmp_path):
    data_dir, pred = make_prediction(tmp_path, with_prob=False)
    index = write_view(pred, tmp_path / "site", progress=False)  # prepared folder found from predictions.csv
    assert index == tmp_path / "site" / "index.html"
    data = load_data(tmp_path / "site")
    assert (data["kind"], data["metrics_from"], data["folders"]["data"]) == ("prediction", "computed by view", str(data_dir))
    for image_id, (dice, iou, outcome, _, _) in EXPECTED.items():
        c = data["cases"][image_id]
        assert (c["dice"], c["iou"], c["outcome"], c["prob"]) == (pytest.approx(dice, abs=1e-12), pytest.approx(iou, abs=1e-12), outcome, 0)
    dices = [e[0] for e in EXPECTED.values()]
    assert data["summary"]["dice_mean"] == pytest.approx(np.mean(dices), abs=1e-12)
    assert data["summary"]["n_both_empty"] == 1 and data["summary"]["grid"] == "shown"
    assert load_case_script(tmp_path / "site", "tn")["prob"] is None and load_data(tmp_path / "site")["cases"]["tn"]["prob_max"] is None


def test_folder_evaluation_view_has_masks_without_images(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for image_id, (*_, ref_box, pred_box) in CASES.items():
        write_png(ref_dir / f"{image_id}.png", rect(ref_box))
        write_png(pred_dir / f"{image_id}.png", rect(pred_box))
    evaluate_folders(pred_dir, ref_dir, tmp_path / "eval", progress=False)
    write_view(tmp_path / "eval", progress=False)
    data = load_data(tmp_path / "eval" / "view")
    assert data["folders"]["ref"] == str(ref_dir)
    for image_id, (dice, _, outcome, ref_px, pred_px) in EXPECTED.items():
        c = data["cases"][image_id]
        assert (c["dice"], c["outcome"], c["ref_area"], c["pred_area"], c["img"], c["ref"]) == (
            round(dice, 6), outcome, ref_px, pred_px, 0, 1)
        assert c["patient"] == ""


def test_run_folder_has_learning_curves_and_table2(tmp_path):
    run, _ = make_run(tmp_path)
    write_view(run, progress=False)
    data = load_data(run / "view")
    assert data["kind"] == "run" and len(data["rows"]) == len(CASES)
    assert data["run"]["model"] == "ResNet22-UNet" and data["run"]["weights"] == "none (random init)"
    assert data["run"]["learning_curves"] == "figures/learning_curves.png"
    assert (run / "view" / "figures" / "learning_curves.png").is_file()
    tables = [b for b in data["run"]["table2"] if "header" in b]
    assert tables[0]["rows"][0][:4] == ["hand-made", "ResNet22-UNet", "none (random init)", "6"]
    assert len(tables[1]["rows"]) == 8  # the paper's Table 2
    settings = data["run"]["settings"]
    assert settings[0]["header"][:5] == ["Run", "Image size", "Epochs (combo + focal Tversky)", "Initial weights",
                                         "Folds"]
    # a hand-made config.yaml: no epochs or folds recorded; the image size from the prepared folder's manifest
    assert settings[0]["rows"][0][:5] == ["run", "64 px (manifest.csv)", "not recorded", "none (random init)",
                                          "not recorded (2 trained)"]
    assert settings[1] == {"text": "The paper's 512 px numbers are not comparable with run, which was trained at 64 px "
                                   "(the paper: 512 px), with 2 folds (the paper: 5) and from random initial weights "
                                   "(the paper: ImageNet or GMIC)."}


def test_output_folder_rules(tmp_path):
    _, pred, ev = make_evaluation(tmp_path)
    out = ev / "view"
    write_view(ev, progress=False)
    (out / "my-notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_view(ev, progress=False)
    (out / "thumbs" / "stale.png").write_bytes(b"x")
    write_view(ev, overwrite=True, progress=False)
    assert (out / "my-notes.txt").read_text() == "keep me"  # not view's: kept
    assert not (out / "thumbs" / "stale.png").exists()  # view's folder: replaced whole
    assert json.loads((out / MARKER).read_text())["command"] == "view"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not written by `mammoseg view`"):
        write_view(ev, foreign, overwrite=True, progress=False)
    assert (foreign / "a.txt").read_text() == "x"
    for bad in (pred, tmp_path):  # the prediction folder itself, or a folder holding the inputs
        with pytest.raises(ValueError, match="the output folder (is|contains) the input"):
            write_view(ev, bad, overwrite=True, progress=False)


def test_input_errors_name_the_file(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not a prediction, evaluation or run folder"):
        write_view(tmp_path, progress=False)
    _, pred = make_prediction(tmp_path)
    write_png(pred / "masks" / "tp_good.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match=r"tp_good\.png: predicted mask is 20×30, the image is 64×64"):
        write_view(pred, tmp_path / "site", progress=False)
    assert main(["view", str(tmp_path / "nowhere")]) == 2
    assert "not a prediction, evaluation or run folder" in capsys.readouterr().err


def test_file_names_and_markdown_blocks():
    assert file_names(["a b", "a_b", "A_B", "../x", ""]) == ["a_b", "a_b_2", "A_B_3", "x", "image"]
    blocks = markdown_blocks("| A | B |\n| --- | ---: |\n| 1 | 2 |\n\nsome text\n\n| C |\n| - |\n| 3 |\n")
    assert blocks == [{"header": ["A", "B"], "rows": [["1", "2"]]}, {"text": "some text"},
                      {"header": ["C"], "rows": [["3"]]}]


def test_prediction_on_the_original_grid_is_shown_on_the_prepared_grid(tmp_path):
    from test_evaluate import ORIG, make_folders
    from test_evaluate import rect as rect_on

    ref_prep = rect_on((32, 32), 4, 12, 2, 6)  # 32 px on the 32×32 prepared grid
    cases = {"o": ("holdout", "p1", ref_prep, rect_on(ORIG, 8, 24, 4, 7))}  # written on the 64×32 original grid
    data_dir, pred = make_folders(tmp_path, cases)
    write_view(pred, tmp_path / "site", data_dir=data_dir, progress=False)
    case = load_data(tmp_path / "site")["cases"]["o"]
    # as `evaluate` scores it on the prepared grid: the 3 original columns cover prepared column 2 and half of 3
    assert (case["w"], case["h"], case["pred_area"], case["ref_area"]) == (32, 32, 16, 32)
    assert case["dice"] == pytest.approx(2 * 16 / (32 + 16), abs=1e-12)
