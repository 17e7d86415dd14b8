"""Hand-made cases for the view tests: a prepared folder, a prediction folder (masks, prob/,
predictions.csv, predict.json), and optionally its evaluation and a run folder around them.

Every Dice and IoU below is worked out by hand from the rectangles (|P∩R|, |P|, |R|).
"""

from __future__ import annotations

import json

import numpy as np

from mammoseg.evaluation.scoring import evaluate_predictions
from mammoseg.io import write_csv_atomic, write_png, write_text_atomic
from mammoseg.manifest import MANIFEST_COLUMNS

S = 64
LOG_COLUMNS = ("epoch", "phase", "lr", "train_loss", "val_loss", "val_dice", "seconds")

# id -> (patient, view, laterality, reference rectangle, predicted rectangle); None = no mass
CASES = {
    "tp_good": ("p1", "CC", "L", (10, 30, 10, 30), (12, 30, 10, 30)),  # 400 ref, 360 pred inside it
    "tp_bad": ("p1", "MLO", "L", (10, 30, 10, 30), (25, 40, 25, 40)),  # 400 and 225, 5×5 = 25 shared
    "fn_small": ("p2", "CC", "R", (30, 40, 30, 40), None),
    "fn_big": ("p3", "MLO", "R", (5, 45, 5, 45), None),
    "fp": ("p4", "CC", "L", None, (5, 15, 40, 50)),
    "tn": ("p5", "MLO", "L", None, None),
}
# id -> (Dice, IoU, outcome, reference px, predicted px)
EXPECTED = {
    "tp_good": (2 * 360 / (400 + 360), 360 / 400, "TP", 400, 360),
    "tp_bad": (2 * 25 / (400 + 225), 25 / (400 + 225 - 25), "TP", 400, 225),
    "fn_small": (0.0, 0.0, "FN", 100, 0),
    "fn_big": (0.0, 0.0, "FN", 1600, 0),
    "fp": (0.0, 0.0, "FP", 0, 100),
    "tn": (1.0, 1.0, "TN", 0, 0),
}


def rect(box):
    mask = np.zeros((S, S), np.uint8)
    if box is not None:
        r0, r1, c0, c1 = box
        mask[r0:r1, c0:c1] = 255
    return mask


def make_prediction(root, with_prob=True):
    """root/prepared (images, masks, manifest.csv) and root/pred (masks, prob, predictions.csv, predict.json)."""
    data, pred = root / "prepared", root / "pred"
    rows, preds = [], []
    for i, (image_id, (patient, view, side, ref_box, pred_box)) in enumerate(CASES.items()):
        image = (np.add.outer(np.arange(S), np.arange(S)) * 250 + 3000 * (i + 1)).astype(np.uint16)
        ref, mask = rect(ref_box), rect(pred_box)
        image[ref > 0] = 60000
        write_png(data / "images" / f"{image_id}.png", image)
        write_png(data / "masks" / f"{image_id}.png", ref)
        write_png(pred / "masks" / f"{image_id}.png", mask)
        if with_prob:
            write_png(pred / "prob" / f"{image_id}.png", np.where(mask > 0, 60000, 1000).astype(np.uint16))
        row = {c: "" for c in MANIFEST_COLUMNS}
        row.update(id=image_id, patient_id=patient, image=f"images/{image_id}.png", mask=f"masks/{image_id}.png",
                   split="holdout", orig_height=S, orig_width=S, laterality=side, view=view, source="test",
                   has_mass=int(ref.any()), chest_side="left", pad_top=0, pad_bottom=0, pad_left=0, pad_right=0, size=S)
        rows.append(row)
        preds.append({"id": image_id, "input": str(data / "images" / f"{image_id}.png"),
                      "mask": f"masks/{image_id}.png", "height": S, "width": S, "grid": "prepared"})
    write_csv_atomic(data / "manifest.csv", rows, MANIFEST_COLUMNS)
    write_csv_atomic(pred / "predictions.csv", preds, ("id", "input", "mask", "height", "width", "grid"))
    # what predict records: the inputs it read, and the prepared folders among them
    write_text_atomic(pred / "predict.json", json.dumps({"inputs": [str(data)], "data_dirs": [str(data)]}))
    return data, pred


def make_evaluation(root, with_prob=True):
    """make_prediction, then `evaluate` into root/eval; returns (data, pred, eval)."""
    data, pred = make_prediction(root, with_prob)
    evaluate_predictions(pred, data, root / "eval", progress=False)
    return data, pred, root / "eval"


def make_run(root):
    """A run folder as reproduce leaves it: config.yaml, fold logs, holdout_pred/, eval/, reproduce.json."""
    run = root / "run"
    write_text_atomic(run / "config.yaml", "name: demo\nmodel:\n  encoder: resnet22\n  decoder: unet\n"
                                           "  encoder_weights: null\n")
    for k in range(2):
        log = [{"epoch": e, "phase": "combo" if e <= 2 else "focal_tversky", "lr": 1e-4, "train_loss": 1.0 / e,
                "val_loss": 1.2 / e, "val_dice": 0.2 * e, "seconds": 1.0} for e in range(1, 5)]
        write_csv_atomic(run / f"fold{k}" / "log.csv", log, LOG_COLUMNS)
    data, pred = make_prediction(run.parent / "work")
    pred.rename(run / "holdout_pred")
    evaluate_predictions(run / "holdout_pred", data, run / "eval", progress=False)
    write_text_atomic(run / "reproduce.json", f'{{"data_dir": "{data}", "dataset": "hand-made"}}\n')
    return run, data
