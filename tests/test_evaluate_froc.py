"""`mammoseg evaluate` with saved probability maps: froc.csv and summary.json's `froc`, on hand-made folders."""

import csv
import json

import numpy as np
import pytest

from mammoseg.cli import main
from mammoseg.evaluation.scoring import Scoring, evaluate_folders, evaluate_predictions
from mammoseg.io import write_png

from prepared_factory import Case, write_prepared

S = 32  # prepared size; every original is 64 rows × 32 columns, padded right to 64×64, halved
PLAN = {"orig_height": 64, "orig_width": 32, "pad_top": 0, "pad_bottom": 0, "pad_left": 0, "pad_right": 32, "size": S}


def rect(r0, r1, c0, c1, value=255, dtype=np.uint8):
    m = np.zeros((S, S), dtype)
    m[r0:r1, c0:c1] = value
    return m


def blobs(*parts):
    """A prepared-grid probability map: (r0, r1, c0, c1, probability) blobs on a background of 0."""
    prob = np.zeros((S, S))
    for r0, r1, c0, c1, p in parts:
        prob[r0:r1, c0:c1] = p
    return prob


# id -> (reference mask, probability map), all inside the image (prepared columns 0–15; the rest is padding).
# Values sit between the sweep's 0.01 steps.
CASES = {
    # lesion rows 4–12, cols 2–6 (32 px): cols 2–4 at 0.905 (IoU 0.5), cols 4–6 at 0.305; a false blob at 0.705
    "a": (rect(4, 12, 2, 6), blobs((4, 12, 2, 4, 0.905), (4, 12, 4, 6, 0.305), (25, 28, 10, 13, 0.705))),
    "b": (rect(0, 0, 0, 0), blobs((1, 3, 10, 13, 0.205))),  # no mass; a false blob at 0.205
    "c": (rect(0, 0, 0, 0), blobs((20, 24, 2, 6, 0.605))),  # no mass; a false blob at 0.605
    "d": (rect(20, 26, 10, 16), blobs((20, 26, 10, 16, 0.405))),  # lesion at 0.405: missed at 0.5
}


def saved(prob):
    """What predict --save-prob writes."""
    return np.round(np.clip(prob, 0.0, 1.0) * 65535).astype(np.uint16)


def make_folders(tmp_path, cases=CASES, with_prob=True, original_grid=False):
    data, pred = tmp_path / "prepared", tmp_path / "pred"
    prepared = []
    for image_id, (ref, prob) in cases.items():
        mask = np.where(prob >= 0.5, 255, 0).astype(np.uint8)
        if original_grid:  # as predict writes for a DICOM input: each prepared pixel is 2×2 original ones
            prob, mask = np.kron(prob, np.ones((2, 2)))[:, :32], np.kron(mask, np.ones((2, 2), np.uint8))[:, :32]
        write_png(pred / "masks" / f"{image_id}.png", mask)
        if with_prob:
            write_png(pred / "prob" / f"{image_id}.png", saved(prob))
        prepared.append(Case(image_id, f"p{image_id}", np.full((S, S), 1000, np.uint16), ref, "holdout", dict(PLAN)))
    write_prepared(data, prepared)
    (pred / "predict.json").write_text(json.dumps({"threshold": 0.5}))
    return data, pred


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_froc_hand_computed_and_equal_to_per_image_counts_at_the_predict_threshold(tmp_path):
    data, pred = make_folders(tmp_path)
    out = tmp_path / "eval"
    summary = evaluate_predictions(pred, data, out, progress=False)
    froc = summary["froc"]
    assert summary["froc_skipped"] is None
    # sensitivity / FP per image by threshold (2 lesions, 4 images):
    #   ≤0.20: 1, 0.75   0.21–0.30: 1, 0.5   0.31–0.40: 1, 0.5   0.41–0.60: 0.5, 0.5
    #   0.61–0.70: 0.5, 0.25   0.71–0.90: 0.5, 0   ≥0.91: 0, 0
    assert froc["operating_points"] == {"0.125": 0.5, "0.25": 0.5, "0.5": 1.0, "1": 1.0, "2": 1.0, "4": 1.0, "8": 1.0}
    assert froc["mean_sensitivity"] == pytest.approx(6 / 7)
    assert (froc["n_ref_lesions"], froc["n_images"], froc["lesion_iou_threshold"]) == (2, 4, 0.2)
    assert froc["at_predict_threshold"] == {"threshold": 0.5, "sensitivity": 0.5, "fp_per_image": 0.5}

    rows = read_csv(out / "froc.csv")
    assert len(rows) == froc["n_thresholds"] == 117
    by_t = {r["threshold"]: r for r in rows}
    assert [(by_t[t]["sensitivity"], by_t[t]["fp_per_image"]) for t in ("0.2", "0.21", "0.4", "0.41", "0.61", "0.71", "0.91")] == [
        ("1.000000", "0.750000"), ("1.000000", "0.500000"), ("1.000000", "0.500000"), ("0.500000", "0.500000"),
        ("0.500000", "0.250000"), ("0.500000", "0.000000"), ("0.000000", "0.000000")]

    # the point at the predict threshold is the sum of per_image.csv's lesion counts
    per_image = read_csv(out / "per_image.csv")
    assert (by_t["0.5"]["n_detected"], by_t["0.5"]["n_false_positives"]) == (
        str(sum(int(r["n_detected"]) for r in per_image)), str(sum(int(r["n_false_positives"]) for r in per_image)))
    assert json.loads((out / "summary.json").read_text())["froc"] == froc


def test_probability_maps_on_the_original_grid_give_the_same_froc(tmp_path):
    data, pred = make_folders(tmp_path / "p")
    prepared = evaluate_predictions(pred, data, tmp_path / "p" / "eval", progress=False)
    data, pred = make_folders(tmp_path / "o", original_grid=True)
    original = evaluate_predictions(pred, data, tmp_path / "o" / "eval", progress=False)
    assert original["froc"] == prepared["froc"]
    # scored on the original grid instead: the maps there, the curve still finds both lesions
    on_original = evaluate_predictions(pred, data, tmp_path / "o" / "e2", Scoring(original_size=True), progress=False)
    assert on_original["grid"] == "original"
    assert on_original["froc"]["at_predict_threshold"] == {"threshold": 0.5, "sensitivity": 0.5, "fp_per_image": 0.5}
    assert on_original["froc"]["operating_points"]["1"] == 1.0


def test_without_probability_maps_froc_is_skipped_and_said(tmp_path, caplog):
    data, pred = make_folders(tmp_path, with_prob=False)
    (pred / "prob").mkdir()
    write_png(pred / "prob" / "a.png", saved(CASES["a"][1]))  # one of four is not enough
    caplog.set_level("INFO", logger="mammoseg.evaluation.scoring")
    summary = evaluate_predictions(pred, data, tmp_path / "eval", progress=False)
    assert summary["froc"] is None
    assert summary["froc_skipped"].startswith("no probability map for 3 of 4 images (b, c, d)")
    assert "--save-prob" in summary["froc_skipped"]
    assert not (tmp_path / "eval" / "froc.csv").exists()
    assert [r.message for r in caplog.records if "FROC" in r.message] == [f"FROC skipped: {summary['froc_skipped']}"]


def test_no_reference_lesions_skips_froc(tmp_path):
    cases = {k: v for k, v in CASES.items() if k in "bc"}
    data, pred = make_folders(tmp_path, cases)
    summary = evaluate_predictions(pred, data, tmp_path / "eval", progress=False)
    assert summary["froc"] is None and "no reference lesions" in summary["froc_skipped"]


def test_folder_against_folder_says_it_computes_no_froc(tmp_path):
    _, pred = make_folders(tmp_path)
    ref = tmp_path / "ref"
    for image_id, (mask, _) in CASES.items():
        write_png(ref / f"{image_id}.png", mask)
    summary = evaluate_folders(pred, ref, tmp_path / "eval", progress=False)
    assert summary["froc"] is None and "--ref" in summary["froc_skipped"]


def test_bad_probability_maps_are_clear_errors(tmp_path):
    data, pred = make_folders(tmp_path)
    write_png(pred / "prob" / "c.png", np.zeros((20, 20), np.uint16))
    with pytest.raises(ValueError, match=r"c\.png: probability map is 20×20; expected the prepared size 32×32"):
        evaluate_predictions(pred, data, tmp_path / "e1", progress=False)
    write_png(pred / "prob" / "c.png", np.zeros((S, S), np.uint8))
    with pytest.raises(ValueError, match=r"c\.png: a probability map must be a 16-bit greyscale PNG"):
        evaluate_predictions(pred, data, tmp_path / "e2", progress=False)


def test_command_line_prints_the_mean_sensitivity(tmp_path, capsys):
    data, pred = make_folders(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FROC mean sensitivity 0.857" in printed and "froc.csv" in printed
