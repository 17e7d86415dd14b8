"""`mammoseg evaluate --pred DIR --ref DIR`: two folders of PNG masks, paired by file stem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammoseg.cli import main
from mammoseg.evaluation.metrics import summarise
from mammoseg.evaluation.scoring import evaluate_folders
from mammoseg.io import read_csv, write_png

S = 32


def rect(r0, r1, c0, c1, value=255, dtype=np.uint8, shape=(S, S)):
    m = np.zeros(shape, dtype)
    m[r0:r1, c0:c1] = value
    return m


EMPTY = np.zeros((S, S), np.uint8)
# stem -> (reference, prediction); the values differ on purpose: any non-zero pixel is mass.
CASES = {
    "inside": (rect(4, 12, 2, 6, value=1), rect(4, 12, 2, 4)),  # 32 px ref, 16 px pred inside it
    "shifted": (rect(0, 10, 0, 10), rect(5, 15, 5, 15, value=40000, dtype=np.uint16)),  # 100 + 100 px, 25 shared
    "both_empty": (EMPTY, EMPTY),
    "false_pos": (EMPTY, rect(20, 24, 20, 24)),
    "missed": (rect(20, 26, 10, 16), EMPTY),
}
# By hand: Dice = 2|P∩R| / (|P| + |R|), IoU = |P∩R| / |P∪R|; both empty = 1, one empty = 0.
EXPECTED = {
    "inside": (2 * 16 / 48, 16 / 32),
    "shifted": (2 * 25 / 200, 25 / 175),
    "both_empty": (1.0, 1.0),
    "false_pos": (0.0, 0.0),
    "missed": (0.0, 0.0),
}


def make_folders(tmp_path, cases=CASES, pred_sub=""):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for stem, (ref, pred) in cases.items():
        if ref is not None:
            write_png(ref_dir / f"{stem}.png", ref)
        if pred is not None:
            write_png(pred_dir / pred_sub / f"{stem}.png", pred)
    return pred_dir, ref_dir


def test_hand_made_masks_score_exactly(tmp_path, capsys):
    pred, ref = make_folders(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out)]) == 0
    rows = {r["id"]: r for r in read_csv(out / "per_image.csv")}
    assert set(rows) == set(EXPECTED)
    for stem, (dice, iou) in EXPECTED.items():
        assert rows[stem]["dice"] == f"{dice:.6f}" and rows[stem]["iou"] == f"{iou:.6f}", stem
        assert rows[stem]["patient_id"] == ""
    assert [(rows[s]["ref_empty"], rows[s]["pred_empty"]) for s in ("inside", "both_empty", "false_pos", "missed")] == [
        ("0", "0"), ("1", "1"), ("1", "0"), ("0", "1")]
    assert [rows[s]["n_false_positives"] for s in ("inside", "shifted", "false_pos", "missed")] == ["0", "1", "1", "0"]

    summary = json.loads((out / "summary.json").read_text())
    dices = [d for d, _ in EXPECTED.values()]
    assert summary["n"] == 5
    assert summary["dice_mean"] == pytest.approx(np.mean(dices), abs=1e-12)
    assert summary["dice_sd"] == pytest.approx(np.std(dices, ddof=1), abs=1e-12)
    assert summary["iou_mean"] == pytest.approx(np.mean([j for _, j in EXPECTED.values()]), abs=1e-12)
    assert (summary["n_both_empty"], summary["n_ref_empty_pred_not"], summary["n_ref_not_pred_empty"],
            summary["n_both_nonempty"]) == (1, 1, 1, 2)
    # lesions at IoU 0.2: inside detected (IoU 1/2); shifted not (IoU 1/7), so its prediction is a false positive
    assert summary["lesion_sensitivity"] == pytest.approx(1 / 3)
    assert summary["false_positives_per_image"] == pytest.approx(2 / 5)
    assert summary["ref_dir"] == str(ref) and summary["pred_dir"] == str(pred) and summary["data_dir"] is None
    # no patient ids in a folder of masks: the CI resamples images, and says so
    assert (summary["ci_unit"], summary["n_patients"]) == ("image", None)
    in_order = sorted(EXPECTED)  # evaluate scores the stems in sorted order
    by_image = summarise([EXPECTED[s][0] for s in in_order], [EXPECTED[s][1] for s in in_order])
    assert summary["dice_ci95"] == by_image["dice_ci95"]
    assert read_csv(out / "errors.csv") == []
    assert "n=5, Dice" in capsys.readouterr().out


def test_prediction_folder_of_predict_is_read_through_masks(tmp_path):
    pred, ref = make_folders(tmp_path, pred_sub="masks")
    summary = evaluate_folders(pred, ref, tmp_path / "eval", progress=False)
    assert summary["n"] == 5 and summary["dice_mean"] == pytest.approx(np.mean([d for d, _ in EXPECTED.values()]))


def test_mismatched_names_are_reported_not_guessed(tmp_path, capsys):
    cases = dict(CASES)
    cases["only_ref"] = (rect(1, 5, 1, 5), None)
    cases["only_pred"] = (None, rect(1, 5, 1, 5))
    pred, ref = make_folders(tmp_path, cases)
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and str(out / "errors.csv") in err and "--allow-missing" in err
    errors = {r["id"]: r["reason"] for r in read_csv(out / "errors.csv")}
    assert errors == {"only_ref": "no predicted mask with this name", "only_pred": "no reference mask with this name"}
    assert not (out / "per_image.csv").exists() and not (out / "summary.json").exists()

    # --allow-missing: the reference without a prediction counts as an empty prediction,
    # the prediction without a reference is left unscored (and still listed).
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--allow-missing"]) == 0
    rows = {r["id"]: r for r in read_csv(out / "per_image.csv")}
    assert set(rows) == set(CASES) | {"only_ref"}
    assert (rows["only_ref"]["pred_missing"], rows["only_ref"]["dice"]) == ("1", "0.000000")
    assert [r["id"] for r in read_csv(out / "errors.csv")] == ["only_pred"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_missing"] == 1 and summary["n_unscored_predictions"] == 1


def test_size_mismatch_is_an_error_listed_in_errors_csv(tmp_path):
    cases = dict(CASES)
    cases["small"] = (rect(1, 5, 1, 5), np.zeros((20, 24), np.uint8))
    pred, ref = make_folders(tmp_path, cases)
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match=r"1 problem\(s\).*small: size mismatch: prediction 20×24, reference 32×32"):
        evaluate_folders(pred, ref, out, allow_missing=True, progress=False)
    assert read_csv(out / "errors.csv") == [{"id": "small", "pred": str(pred / "small.png"), "ref": str(ref / "small.png"),
                                             "reason": "size mismatch: prediction 20×24, reference 32×32"}]
    assert not (out / "summary.json").exists()


def test_folder_errors(tmp_path, capsys):
    pred, ref = make_folders(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        evaluate_folders(tmp_path / "nowhere", ref, tmp_path / "e", progress=False)
    write_png(pred / "inside.PNG", EMPTY)
    with pytest.raises(ValueError, match="two predicted masks named 'inside'"):
        evaluate_folders(pred, ref, tmp_path / "e", progress=False)
    other = tmp_path / "other"
    write_png(other / "zzz.png", EMPTY)
    with pytest.raises(ValueError, match="no mask names in common"):
        evaluate_folders(other, ref, tmp_path / "e2", allow_missing=True, progress=False)
    assert {r["id"] for r in read_csv(tmp_path / "e2" / "errors.csv")} == {"zzz"}
    # a foreign errors.csv is not replaced without --overwrite
    (tmp_path / "e3").mkdir()
    (tmp_path / "e3" / "errors.csv").write_text("mine\n")
    with pytest.raises(FileExistsError, match="not written by `mammoseg evaluate`"):
        evaluate_folders(ref, ref, tmp_path / "e3", progress=False)
    assert main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--out", str(tmp_path / "e4"), "--split", "train"]) == 2
    assert "--split and --original-size need a prepared folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--data", str(ref), "--out", str(tmp_path / "e5")])
