"""The report's FROC: the line per run, the section's table and froc.png, from hand-written evaluations."""

from __future__ import annotations

import json

import cv2
import numpy as np

from mammoseg.io import write_csv_atomic, write_text_atomic
from mammoseg.report import write_report

POINTS = {"0.125": 0.25, "0.25": 0.25, "0.5": 0.5, "1": 0.75, "2": 1.0, "4": 1.0, "8": 1.0}
CURVE = [  # threshold, sensitivity, fp_per_image: 4 lesions in 8 images (POINTS are its operating points)
    (0.9, 0.25, 0.125), (0.7, 0.5, 0.5), (0.5, 0.75, 1.0), (0.3, 1.0, 2.0), (0.1, 1.0, 3.0),
]


def make_run(root, froc=True, skipped=None):
    """A run folder with config.yaml and eval/summary.json (with `froc`, or `froc: null` and a reason,
    or, with froc=None, an evaluation written before FROC existed)."""
    write_text_atomic(root / "config.yaml", "name: paper\nmodel:\n  encoder: resnet22\n  decoder: unet\n"
                                            "  encoder_weights: null\n")
    summary = {"n": 8, "dice_mean": 0.6, "dice_sd": 0.2, "iou_mean": 0.5, "iou_sd": 0.2, "split": "holdout",
               "grid": "prepared"}
    if froc:
        summary.update(froc={"operating_points": POINTS, "mean_sensitivity": 4.75 / 7, "at_predict_threshold": None,
                             "lesion_iou_threshold": 0.2, "n_ref_lesions": 4, "n_images": 8, "n_thresholds": 5},
                       froc_skipped=None)
        rows = [{"threshold": t, "sensitivity": s, "fp_per_image": f, "n_detected": round(4 * s),
                 "n_false_positives": round(8 * f)} for t, s, f in CURVE]
        write_csv_atomic(root / "eval" / "froc.csv", rows,
                         ("threshold", "sensitivity", "fp_per_image", "n_detected", "n_false_positives"))
    elif froc is False:
        summary.update(froc=None, froc_skipped=skipped)
    write_text_atomic(root / "eval" / "summary.json", json.dumps(summary))


def test_report_has_the_froc_line_table_and_curve(tmp_path):
    make_run(tmp_path / "with")
    make_run(tmp_path / "without", froc=False, skipped="no probability map for 8 of 8 images")
    make_run(tmp_path / "older", froc=None)
    report = write_report([tmp_path / "with", tmp_path / "without", tmp_path / "older"], tmp_path / "out")
    md = report.read_text()
    assert ("- FROC (lesion IoU ≥ 0.2, 4 lesions in 8 images): mean sensitivity 0.679; sensitivity at "
            "0.125 / 0.25 / 0.5 / 1 / 2 / 4 / 8 FP/image: 0.250 / 0.250 / 0.500 / 0.750 / 1.000 / 1.000 / 1.000") in md
    assert "- FROC: not computed (no probability map for 8 of 8 images)" in md
    assert md.count("FROC (lesion IoU") == 1 and md.count("FROC: not computed") == 1  # nothing for the older run
    assert ("| Run | Mean sensitivity | 0.125 FP/image | 0.25 FP/image | 0.5 FP/image | 1 FP/image | 2 FP/image | "
            "4 FP/image | 8 FP/image |") in md
    section = md[md.index("## FROC"):md.index("![FROC](froc.png)")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["| with | 0.679 | 0.250 | 0.250 | 0.500 | 0.750 | 1.000 | 1.000 | 1.000 |"]  # only the run with one
    figure = cv2.imread(str(tmp_path / "out" / "froc.png"), cv2.IMREAD_COLOR)
    assert np.count_nonzero(np.all(figure == (180, 119, 31), axis=2)) > 50  # the curve, in matplotlib's C0 (BGR)


def test_report_without_any_froc_has_no_section(tmp_path):
    make_run(tmp_path / "older", froc=None)
    md = write_report([tmp_path / "older"], tmp_path / "out").read_text()
    assert "FROC" not in md and not (tmp_path / "out" / "froc.png").exists()
