"""`mammoseg evaluate` end to end on a tiny hand-made prepared folder and prediction folder."""

import csv
import json

import numpy as np
import pytest

from mammoseg.cli import main
from mammoseg.evaluation.metrics import summarise
from mammoseg.evaluation.scoring import Scoring, evaluate_predictions
from mammoseg.io import write_png

from prepared_factory import Case, write_prepared

S = 32  # prepared size
# Original grid of every image: 64 rows × 32 columns, chest wall on the left, padded on the right
# to 64×64 and resized by 1/2 to 32×32 (so even-aligned rectangles map exactly).
ORIG = (64, 32)
PLAN = {"orig_height": 64, "orig_width": 32, "pad_top": 0, "pad_bottom": 0, "pad_left": 0, "pad_right": 32, "size": S}


def rect(shape, r0, r1, c0, c1):
    m = np.zeros(shape, np.uint8)
    m[r0:r1, c0:c1] = 255
    return m


EMPTY = np.zeros((S, S), np.uint8)
# id -> (split, patient, reference mask, predicted mask or None for "not written"), prepared grid
CASES = {
    "a": ("holdout", "p1", rect((S, S), 4, 12, 2, 6), rect((S, S), 4, 12, 2, 4)),  # 32 px ref, 16 px pred inside
    "b": ("holdout", "p2", EMPTY, EMPTY),  # both empty
    "c": ("holdout", "p3", EMPTY, rect((S, S), 20, 24, 20, 24)),  # reference empty, prediction not
    "d": ("holdout", "p4", rect((S, S), 20, 26, 10, 16), EMPTY),  # prediction empty, reference not
    "t": ("train", "p5", rect((S, S), 1, 5, 1, 5), EMPTY),  # other split: ignored
}


def make_folders(tmp_path, cases=CASES):
    data, pred = tmp_path / "prepared", tmp_path / "pred"
    prepared = []
    for image_id, (split, patient, ref, pr) in cases.items():
        if pr is not None:
            write_png(pred / "masks" / f"{image_id}.png", pr)
        prepared.append(Case(image_id, patient, np.full((S, S), 1000, np.uint16), ref, split, dict(PLAN)))
    write_prepared(data, prepared)
    (pred / "masks").mkdir(parents=True, exist_ok=True)
    return data, pred


def read_rows(path):
    with open(path, newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def test_evaluate_end_to_end_prepared_grid(tmp_path):
    data, pred = make_folders(tmp_path)
    out = tmp_path / "eval"
    summary = evaluate_predictions(pred, data, out, progress=False)

    rows = read_rows(out / "per_image.csv")
    assert set(rows) == {"a", "b", "c", "d"}  # the train image is not scored
    assert float(rows["a"]["dice"]) == pytest.approx(2 * 16 / (32 + 16), abs=1e-6)
    assert float(rows["a"]["iou"]) == pytest.approx(16 / 32, abs=1e-6)
    assert (rows["b"]["dice"], rows["c"]["dice"], rows["d"]["dice"]) == ("1.000000", "0.000000", "0.000000")
    assert [(rows[i]["ref_empty"], rows[i]["pred_empty"]) for i in "abcd"] == [("0", "0"), ("1", "1"), ("1", "0"), ("0", "1")]
    assert [rows[i]["n_ref_lesions"] for i in "abcd"] == ["1", "0", "0", "1"]
    assert [rows[i]["n_detected"] for i in "abcd"] == ["1", "0", "0", "0"]
    assert [rows[i]["n_false_positives"] for i in "abcd"] == ["0", "0", "1", "0"]
    assert rows["a"]["patient_id"] == "p1"

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    dices = [2 / 3, 1.0, 0.0, 0.0]
    assert summary["n"] == 4 and summary["split"] == "holdout" and summary["grid"] == "prepared"
    assert summary["dice_mean"] == pytest.approx(np.mean(dices), abs=1e-9)
    assert summary["dice_sd"] == pytest.approx(np.std(dices, ddof=1), abs=1e-9)
    assert summary["iou_mean"] == pytest.approx((0.5 + 1) / 4, abs=1e-9)
    assert (summary["n_both_empty"], summary["n_ref_empty_pred_not"],
            summary["n_ref_not_pred_empty"], summary["n_both_nonempty"]) == (1, 1, 1, 1)
    assert summary["lesion_sensitivity"] == pytest.approx(0.5)
    assert summary["false_positives_per_image"] == pytest.approx(0.25)
    assert summary["lesion_iou_threshold"] == 0.2 and summary["n_missing"] == 0
    lo, hi = summary["dice_ci95"]
    assert 0.0 <= lo <= summary["dice_mean"] <= hi <= 1.0
    # every image names its patient: the CI resamples patients (here one image each)
    assert (summary["ci_unit"], summary["n_patients"]) == ("patient", 4)
    by_patient = summarise(dices, [0.5, 1.0, 0.0, 0.0], patients=["p1", "p2", "p3", "p4"])
    assert summary["dice_ci95"] == by_patient["dice_ci95"]


def test_lesion_threshold_is_passed_through(tmp_path):
    data, pred = make_folders(tmp_path)
    # case a: one predicted component with IoU 0.5 -> not detected at 0.6, and it becomes a false positive
    summary = evaluate_predictions(pred, data, tmp_path / "eval", Scoring(lesion_iou=0.6), progress=False)
    assert summary["lesion_sensitivity"] == 0.0 and summary["false_positives_per_image"] == pytest.approx(0.5)


def test_refuses_to_overwrite_without_flag(tmp_path):
    data, pred = make_folders(tmp_path)
    out = tmp_path / "eval"
    evaluate_predictions(pred, data, out, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        evaluate_predictions(pred, data, out, progress=False)
    evaluate_predictions(pred, data, out, overwrite=True, progress=False)


def test_missing_predictions_error_or_counted_empty(tmp_path):
    cases = dict(CASES)
    cases["a"] = cases["a"][:3] + (None,)
    cases["d"] = cases["d"][:3] + (None,)
    data, pred = make_folders(tmp_path, cases)
    with pytest.raises(FileNotFoundError, match=r"no prediction for 2 of 4 images \(a, d\).*--allow-missing"):
        evaluate_predictions(pred, data, tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval" / "summary.json").exists()
    summary = evaluate_predictions(pred, data, tmp_path / "eval", Scoring(allow_missing=True), progress=False)
    rows = read_rows(tmp_path / "eval" / "per_image.csv")
    assert (rows["a"]["pred_missing"], rows["a"]["dice"], rows["a"]["pred_empty"]) == ("1", "0.000000", "1")
    assert rows["b"]["pred_missing"] == "0"
    assert summary["n_missing"] == 2 and summary["n_ref_not_pred_empty"] == 2


def test_original_size_grid_and_predictions_on_either_grid(tmp_path):
    # the reference on the original grid: rows 8–24, columns 4–12 (16×8 = 128 px)
    pred_orig = rect(ORIG, 8, 24, 4, 7)  # 16×3 = 48 px, inside: not aligned to the 2× grid
    ref_prep = rect((S, S), 4, 12, 2, 6)  # the same rectangle on the prepared grid
    cases = {
        "o": ("holdout", "p1", ref_prep, pred_orig),  # prediction written on the original grid
        "q": ("holdout", "p2", ref_prep, rect((S, S), 4, 12, 2, 4)),  # prediction on the prepared grid
    }
    data, pred = make_folders(tmp_path, cases)

    s_orig = evaluate_predictions(pred, data, tmp_path / "e1", Scoring(original_size=True), progress=False)
    rows = read_rows(tmp_path / "e1" / "per_image.csv")
    # o, computed on the original arrays directly: 48 shared, 128 + 48 total
    assert float(rows["o"]["dice"]) == pytest.approx(2 * 48 / (128 + 48), abs=1e-6)
    assert float(rows["o"]["iou"]) == pytest.approx(48 / 128, abs=1e-6)
    # q maps back to columns 4..8 of rows 8..24: 64 px inside the 128 px reference
    assert float(rows["q"]["dice"]) == pytest.approx(2 * 64 / (128 + 64), abs=1e-6)
    assert s_orig["grid"] == "original"

    evaluate_predictions(pred, data, tmp_path / "e2", progress=False)
    rows = read_rows(tmp_path / "e2" / "per_image.csv")
    # on the prepared grid the 3-column prediction covers prepared columns 2 (full) and 3 (half): 16 px
    assert float(rows["o"]["dice"]) == pytest.approx(2 * 16 / (32 + 16), abs=1e-6)
    assert float(rows["q"]["dice"]) == pytest.approx(2 * 16 / (32 + 16), abs=1e-6)


def test_prediction_of_wrong_size_is_a_clear_error(tmp_path):
    cases = {"a": ("holdout", "p1", rect((S, S), 4, 12, 2, 6), np.zeros((20, 20), np.uint8))}
    data, pred = make_folders(tmp_path, cases)
    with pytest.raises(ValueError, match=r"a\.png: prediction is 20×20; expected the prepared size 32×32"):
        evaluate_predictions(pred, data, tmp_path / "eval", progress=False)


def test_command_line(tmp_path, capsys):
    data, pred = make_folders(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "n=4, Dice 0.4167 ± 0.5000, IoU 0.3750 ±" in printed
    assert (out / "per_image.csv").is_file()
    # second run without --overwrite: one clear error line, exit status 2
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out),
                 "--overwrite", "--split", "train", "--lesion-iou", "0.5"]) == 0
    assert json.loads((out / "summary.json").read_text())["n"] == 1
