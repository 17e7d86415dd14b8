"""Report: Table 2 values, the paper's figures beside them, Figure 2 case choice, files produced."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammoseg.io import read_csv, read_png, write_csv_atomic, write_png, write_text_atomic
from mammoseg.evaluation.runs import weights_label
from mammoseg.report import pick_cases, write_report
from mammoseg.training.state import LOG_COLUMNS

from prepared_factory import Case, write_prepared


def make_data(root, ids):
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 255
    write_prepared(root, [Case(id_, f"p{i}", np.full((64, 64), 1000 * (i + 1), np.uint16), mask, "holdout")
                          for i, id_ in enumerate(ids)])


def make_run(root, encoder, decoder, weights, dices, ids, folds=2, with_pred=True, ref_empty=None):
    """A hand-made run: config.yaml, fold logs, eval/{summary.json, per_image.csv}, holdout_pred masks.

    `ref_empty` (one 0/1 per image, default all 0) marks images without a reference mass."""
    root.mkdir(parents=True)
    weights_yaml = "null" if weights is None else weights
    write_text_atomic(
        root / "config.yaml",
        f"name: paper\nmodel:\n  encoder: {encoder}\n  decoder: {decoder}\n  encoder_weights: {weights_yaml}\n",
    )
    for k in range(folds):
        rows = [
            {"epoch": e, "phase": "combo" if e <= 2 else "focal_tversky", "lr": 1e-4,
             "train_loss": 1.0 / e, "val_loss": 1.1 / e + 0.01 * k, "val_dice": 0.2 * e, "seconds": 1.0}
            for e in range(1, 5)
        ]
        write_csv_atomic(root / f"fold{k}" / "log.csv", rows, LOG_COLUMNS)
    dices = np.asarray(dices, float)
    ious = dices / (2 - dices)
    ref_empty = ref_empty or [0] * len(ids)
    per_image = [
        {"id": i, "patient_id": "p", "dice": d, "iou": j, "ref_empty": e, "pred_empty": int(e and d == 1.0)}
        for i, d, j, e in zip(ids, dices, ious, ref_empty)
    ]
    write_csv_atomic(root / "eval" / "per_image.csv", per_image,
                     ("id", "patient_id", "dice", "iou", "ref_empty", "pred_empty"))
    summary = {
        "n": len(ids), "dice_mean": float(dices.mean()), "dice_sd": float(dices.std(ddof=1)),
        "iou_mean": float(ious.mean()), "iou_sd": float(ious.std(ddof=1)), "dice_median": float(np.median(dices)),
        "dice_ci95": [0.1, 0.9], "split": "holdout", "grid": "prepared",
    }
    write_text_atomic(root / "eval" / "summary.json", json.dumps(summary))
    if with_pred:
        for id_ in ids:
            pred = np.zeros((64, 64), np.uint8)
            pred[25:45, 25:45] = 255
            write_png(root / "holdout_pred" / "masks" / f"{id_}.png", pred)
    return summary


def test_pick_cases_best_median_worst():
    rows = [{"id": f"c{i}", "dice": str(d)} for i, d in enumerate([0.5, 0.9, 0.1, 0.7, 0.3])]
    picked = pick_cases(rows)
    assert [(label, r["id"]) for label, r in picked] == [("best", "c1"), ("median", "c0"), ("worst", "c2")]
    assert [r["id"] for _, r in pick_cases(rows[:1])] == ["c0"]
    assert pick_cases([]) == []


def test_pick_cases_only_among_images_with_a_reference_mass():
    # e0 (both empty, Dice 1) and f0 (false positive, Dice 0) have no reference mass: never picked
    rows = [
        {"id": "e0", "dice": "1.0", "ref_empty": "1", "pred_empty": "1"},
        {"id": "f0", "dice": "0.0", "ref_empty": "1", "pred_empty": "0"},
        {"id": "m1", "dice": "0.8", "ref_empty": "0", "pred_empty": "0"},
        {"id": "m2", "dice": "0.6", "ref_empty": "0", "pred_empty": "0"},
        {"id": "m3", "dice": "0.0", "ref_empty": "0", "pred_empty": "1"},
    ]
    picked = pick_cases(rows)
    assert [(label, r["id"]) for label, r in picked] == [("best", "m1"), ("median", "m2"), ("worst", "m3")]
    assert pick_cases(rows[:2]) == []


def test_figure2_counts_the_images_without_a_mass(tmp_path):
    ids = ["a", "b", "c", "d", "e"]
    data = tmp_path / "prepared"
    make_data(data, ids)
    make_run(tmp_path / "r", "resnet22", "unet", None, [1.0, 0.7, 0.0, 0.5, 0.2], ids, ref_empty=[1, 0, 1, 0, 0])
    report = write_report([tmp_path / "r"], tmp_path / "out", data_dir=data)
    md = report.read_text()
    assert ("among the 3 images with a reference mass. 2 image(s) without a reference mass are counted in the "
            "summary but not shown (1 with no predicted mass either, Dice 1 by convention; 1 with a predicted mass, "
            "Dice 0).") in md
    assert (tmp_path / "out" / "figure2_r.png").is_file()

    make_run(tmp_path / "empty", "resnet22", "unet", None, [1.0, 1.0], ["a", "b"], ref_empty=[1, 1])
    md = write_report([tmp_path / "empty"], tmp_path / "out2", data_dir=data).read_text()
    assert "Figure 2 skipped: no evaluated image has a reference mass" in md
    assert not (tmp_path / "out2" / "figure2_empty.png").exists()


def test_weights_label():
    assert weights_label("imagenet") == "ImageNet"
    assert weights_label("gmic:/w/sample_model_1.p") == "GMIC"
    assert weights_label("/w/sample_model_3.p") == "GMIC"
    assert weights_label(None) == "none (random init)"
    assert weights_label("/w/my.pt") == "custom (my.pt)"


def test_report_files_and_table_values(tmp_path):
    ids = ["a", "b", "c", "d"]
    data = tmp_path / "prepared"
    make_data(data, ids)
    s1 = make_run(tmp_path / "r34", "resnet34", "unet", "imagenet", [0.9, 0.8, 0.4, 0.6], ids)
    s2 = make_run(tmp_path / "r22", "resnet22", "fpn", None, [0.5, 0.7, 0.2, 0.3], ids, with_pred=False)
    out = tmp_path / "report"
    from mammoseg.cli import main

    rc = main(["report", str(tmp_path / "r34"), str(tmp_path / "r22"), "--out", str(out), "--data", str(data)])
    assert rc == 0
    for name in ("report.md", "table2.md", "table2.csv", "figure2_r34.png", "learning_curves_r34.png", "learning_curves_r22.png"):
        assert (out / name).is_file(), name
    assert not (out / "figure2_r22.png").exists()  # no predictions for r22: skipped with a note

    rows = read_csv(out / "table2.csv")
    ours = [r for r in rows if r["source"] == "this run"]
    assert [(r["model"], r["pretrained_weights"], r["dataset"]) for r in ours] == [
        ("ResNet34-UNet", "ImageNet", "prepared"), ("ResNet22-FPN", "none (random init)", "prepared")
    ]
    assert float(ours[0]["dcs_mean"]) == pytest.approx(0.675) and float(ours[0]["dcs_sd"]) == pytest.approx(s1["dice_sd"])
    assert float(ours[1]["iou_mean"]) == pytest.approx(s2["iou_mean"])
    assert float(ours[0]["paper_dcs_oudsm"]) == 0.7677 and float(ours[1]["paper_dcs_inbreast"]) == 0.8050
    paper = {(r["dataset"], r["model"]): r for r in rows if r["source"] != "this run"}
    assert len(paper) == 8
    assert paper[("INbreast", "ResNet22-UNet")]["dcs_sd"] == "0.1091"
    assert paper[("OUDSM", "ResNet22-FPN")]["dcs_sd"] == ""  # SD not restated in PAPER_TABLE2: left empty

    md = (out / "report.md").read_text()
    assert "| prepared | ResNet34-UNet | ImageNet | 4 | 0.6750 ± " in md
    assert "| OUDSM | ResNet34-UNet | ImageNet | 0.7677 ± 0.2134 |" in md
    assert "| OUDSM | ResNet22-UNet | GMIC | 0.7189 |" in md
    assert "](figure2_r34.png)" in md and "](learning_curves_r22.png)" in md
    assert "Figure 2 skipped" in md
    fig = read_png(out / "figure2_r34.png")
    assert fig.shape[0] > fig.shape[1] * 0.5  # three case rows


def test_report_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        write_report([tmp_path], tmp_path / "out")
    make_run(tmp_path / "r", "resnet22", "unet", None, [0.5, 0.6], ["a", "b"], with_pred=False)
    with pytest.raises(ValueError, match="one per run"):
        write_report([tmp_path / "r"], tmp_path / "out", evals=[tmp_path, tmp_path])


def _trained_as(run, overrides=(), image_size=None, version="0.0.9", logs_at="2024-03-01T12:00:00+00:00"):
    """Give a hand-made run what `train` writes: the resolved config.yaml, the folder's marker (the
    mammoseg version), fold logs last written at `logs_at`, and predict.json's image size."""
    import os
    from datetime import datetime

    from mammoseg.config import load_config

    write_text_atomic(run / "config.yaml", load_config("paper", overrides).to_yaml())
    write_text_atomic(run / ".mammoseg.json", json.dumps({"command": "train", "mammoseg": version}))
    newest = datetime.fromisoformat(logs_at).timestamp()
    for k, log in enumerate(sorted(run.glob("fold*/log.csv"))):
        os.utime(log, (newest - 3600 * k, newest - 3600 * k))
    if image_size is not None:
        write_text_atomic(run / "holdout_pred" / "predict.json", json.dumps({"image_size": image_size}))


@pytest.mark.timeout(60)
def test_report_says_what_produced_each_run_and_flags_a_comparison_with_the_paper(tmp_path):
    from mammoseg import __version__

    ids = ["a", "b", "c"]
    data = tmp_path / "prepared"
    make_data(data, ids)  # 64 px images
    make_run(tmp_path / "paper_like", "resnet34", "unet", "imagenet", [0.9, 0.8, 0.7], ids, folds=5)
    _trained_as(tmp_path / "paper_like", image_size=512)
    summary_path = tmp_path / "paper_like" / "eval" / "summary.json"
    write_text_atomic(summary_path, json.dumps({**json.loads(summary_path.read_text()), "ci_unit": "patient"}))
    make_run(tmp_path / "quick", "resnet22", "unet", None, [0.5, 0.6, 0.7], ids, folds=2)
    _trained_as(tmp_path / "quick", ["model.encoder=resnet22", "model.encoder_weights=null", "epochs.combo=2",
                                     "epochs.focal_tversky=3", "n_folds=2"], logs_at="2024-05-02T08:30:00+00:00")
    make_run(tmp_path / "partial", "resnet34", "fpn", "imagenet", [0.5, 0.6, 0.7], ids, folds=5)
    _trained_as(tmp_path / "partial", image_size=512)
    write_text_atomic(tmp_path / "partial" / "config.yaml", "model:\n  encoder: resnet34\n  decoder: fpn\n"
                                                            "  encoder_weights: imagenet\nn_folds: 5\n")  # no epochs

    md = write_report([tmp_path / n for n in ("paper_like", "quick", "partial")], tmp_path / "out",
                      data_dir=data).read_text()
    table_at, settings_at = md.index("## Table 2"), md.index("### What produced these numbers")
    assert table_at < settings_at < md.index("## ResNet34-UNet — paper_like")  # right after Table 2
    assert ("| paper_like | 512 px (predict.json) | 20 + 60 | ImageNet | 5 | 0.0.9 | 2024-03-01 12:00 UTC |"
            in md)
    # the image size of "quick" comes from the prepared folder: no predict.json in its holdout prediction
    assert ("| quick | 64 px (manifest.csv) | 2 + 3 | none (random init) | 2 | 0.0.9 | 2024-05-02 08:30 UTC |"
            in md)
    assert "| partial | 512 px (predict.json) | not recorded | ImageNet | 5 | 0.0.9 | 2024-03-01 12:00 UTC |" in md
    assert f"Report written by mammoseg {__version__}." in md
    assert ("**The paper's 512 px numbers are not comparable with quick**, which was trained at 64 px (the paper: "
            "512 px), for 2 + 3 epochs (the paper: 20 + 60), with 2 folds (the paper: 5) and from random initial "
            "weights (the paper: ImageNet or GMIC).") in md
    assert "Whether the paper's numbers are comparable with partial is unknown: the epochs not recorded." in md
    assert "comparable with paper_like" not in md  # the paper's protocol at 512 px: nothing to flag
    assert "95% CI of mean DCS [0.1000, 0.9000] (patients resampled)" in md
    assert md.count("95% CI of mean DCS [0.1000, 0.9000]") == 3  # the two others record no unit: none shown
    assert md.count("(patients resampled)") == 1


@pytest.mark.timeout(60)
def test_fewer_folds_trained_than_configured_are_flagged(tmp_path):
    ids = ["a", "b"]
    data = tmp_path / "prepared"
    make_data(data, ids)
    make_run(tmp_path / "r", "resnet34", "unet", "imagenet", [0.5, 0.6], ids, folds=2)
    _trained_as(tmp_path / "r", image_size=512)
    (tmp_path / "r" / ".mammoseg.json").unlink()  # a run folder from before the marker: version unknown
    md = write_report([tmp_path / "r"], tmp_path / "out", data_dir=data).read_text()
    assert ("| r | 512 px (predict.json) | 20 + 60 | ImageNet | 5 (2 trained) | not recorded | "
            "2024-03-01 12:00 UTC |") in md
    assert ("**The paper's 512 px numbers are not comparable with r**, which was trained with only 2 of 5 folds "
            "(the paper: 5).") in md
