"""reproduce: model choice, the paper's weights per encoder, and a tiny resumable end-to-end run."""

from __future__ import annotations

import json

import pytest

from mammoseg import __version__
from mammoseg.io import read_csv
from mammoseg.reproduce import (
    PAPER_MODELS,
    StageOptions,
    encoder_weights_for,
    model_config,
    reproduce,
    select_models,
)

from prepared_factory import make_prepared


def test_select_models():
    assert select_models(None) == list(PAPER_MODELS)
    assert select_models(["ResNet22-UNet", "resnet34_fpn,resnet22-unet"]) == [
        ("resnet22-unet", "resnet22", "unet"), ("resnet34-fpn", "resnet34", "fpn")
    ]
    with pytest.raises(ValueError, match="unknown model 'vgg16-unet'"):
        select_models(["vgg16-unet"])


def test_weights_follow_the_paper(tmp_path):
    imagenet = tmp_path / "resnet34-b627a593.pth"
    gmic = tmp_path / "sample_model_1.p"
    imagenet.write_bytes(b"x")
    gmic.write_bytes(b"x")
    assert encoder_weights_for("resnet34", str(imagenet), str(gmic)) == (str(imagenet), "ImageNet")
    assert encoder_weights_for("resnet22", str(imagenet), str(gmic)) == (f"gmic:{gmic}", "GMIC")
    assert encoder_weights_for("resnet34", None, str(gmic)) == (None, "none (random init)")
    assert encoder_weights_for("resnet22", str(imagenet), None) == (None, "none (random init)")
    assert encoder_weights_for("resnet34", "imagenet", None) == ("imagenet", "ImageNet")
    with pytest.raises(FileNotFoundError, match="gmic-weights"):
        encoder_weights_for("resnet22", None, str(tmp_path / "missing.p"))


def test_model_config_keeps_the_rest():
    from mammoseg.config import load_config

    base = load_config("paper", ["batch_size=4"])
    cfg = model_config(base, "resnet22", "fpn", None)
    assert (cfg.model.encoder, cfg.model.decoder, cfg.model.encoder_weights) == ("resnet22", "fpn", None)
    assert cfg.batch_size == 4 and cfg.model.dropout == base.model.dropout
    assert base.model.encoder == "resnet34"  # the base is not changed


def test_model_overrides_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--models"):
        reproduce(tmp_path, tmp_path / "out", overrides=["model.encoder=resnet22"])


def test_tiny_reproduce_runs_and_resumes(tmp_path):
    data, out = tmp_path / "prepared", tmp_path / "exp"
    make_prepared(data, n_patients=6, per_patient=2, holdout_patients=2, seed=1)
    overrides = ["n_folds=2", "epochs.combo=1", "epochs.focal_tversky=0", "batch_size=4", "crop_size=64",
                 "freeze_encoder_epochs=0", "num_workers=0", "norm_samples=4", "lr_milestones=[]"]
    messages: list[str] = []
    report = reproduce(data, out, models=["resnet22-unet"], overrides=overrides,
                       stages=StageOptions("cpu", False, messages.append))
    assert report == out / "report" / "report.md" and report.is_file()
    assert any("no --gmic-weights" in m for m in messages)
    run = out / "resnet22-unet"
    assert sorted(p.parent.name for p in run.glob("fold*/best.pt")) == ["fold0", "fold1"]
    preds = read_csv(run / "holdout_pred" / "predictions.csv")
    assert sorted(r["id"] for r in preds) == ["p0_0", "p0_1", "p1_0", "p1_1"]
    assert (run / "eval" / "summary.json").is_file()
    # the holdout is predicted with its probabilities, so the evaluation has a FROC (one row per threshold)
    assert sorted(p.stem for p in (run / "holdout_pred" / "prob").glob("*.png")) == ["p0_0", "p0_1", "p1_0", "p1_1"]
    froc = json.loads((run / "eval" / "summary.json").read_text())["froc"]
    assert froc["n_images"] == 4 and len(read_csv(run / "eval" / "froc.csv")) == froc["n_thresholds"]
    assert (run / "view" / "index.html").is_file() and f"view: {run / 'view' / 'index.html'}" in messages
    assert len(list((run / "view" / "thumbs").glob("*.png"))) == 4
    table = read_csv(out / "report" / "table2.csv")
    assert (table[0]["model"], table[0]["pretrained_weights"]) == ("ResNet22-UNet", "none (random init)")
    md = report.read_text()  # what produced the run, read back from its folder, and the warning it deserves
    assert f"| resnet22-unet | 64 px (predict.json) | 1 + 0 | none (random init) | 2 | {__version__} | " in md
    assert ("**The paper's 512 px numbers are not comparable with resnet22-unet**, which was trained at 64 px "
            "(the paper: 512 px), for 1 + 0 epochs (the paper: 20 + 60), with 2 folds (the paper: 5) and from "
            "random initial weights (the paper: ImageNet or GMIC).") in md

    chosen = json.loads((run / "postprocessing.json").read_text())  # chosen on the 8 out-of-fold images
    assert chosen["n_images"] == 8 and any(m.startswith("[resnet22-unet] post-processing chosen on 8") for m in messages)
    assert (f"- post-processing chosen on 8 out-of-fold images: threshold {chosen['threshold']:g}, minimum component "
            f"area {chosen['min_area']} px") in md
    holdout = json.loads((run / "holdout_pred" / "predict.json").read_text())
    assert holdout["threshold"] == chosen["threshold"]  # the holdout prediction used it

    stamps = {p: p.stat().st_mtime_ns for p in [run / "fold0" / "best.pt", run / "holdout_pred" / "predictions.csv",
                                               run / "eval" / "summary.json", run / "postprocessing.json"]}
    messages.clear()
    reproduce(data, out, models=["resnet22-unet"], overrides=overrides,
              stages=StageOptions("cpu", False, messages.append))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing redone
    assert any("up to date; skipped" in m for m in messages)
