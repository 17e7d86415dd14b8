"""Evaluate a prediction folder against a prepared folder: per-image Dice/IoU and lesion counts.

Reads the reference masks of one split of a prepared folder (``masks/<id>.png``, the
manifest's ``mask`` column) and the predicted masks ``<pred>/masks/<id>.png``, and writes
``per_image.csv`` and ``summary.json`` (docs/architecture.md, "Evaluation folder").

Grids. By default both masks are compared on the prepared (padded, resized) grid. With
``original_size=True`` both are mapped back onto each image's original pixel grid with
``mammoseg.geometry.invert_mask``, so the scores are in the units a radiologist's image has;
the reference there is the prepared mask mapped back (the original annotation is not kept
in the prepared folder). A prediction already on the original grid (``mammoseg predict`` on
DICOM inputs) is recognised by its shape and is mapped onto the prepared grid when needed.

Empty masks follow ``mammoseg.metrics`` (both empty: 1; one empty: 0), and the summary
counts how many images were of each kind so a mean can be read correctly.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mammoseg.geometry import PadResize, apply_to_mask, invert_mask
from mammoseg.io import read_png, write_csv_atomic, write_text_atomic
from mammoseg.manifest import load_manifest
from mammoseg.metrics import dice_iou, fmt_mean_sd, lesion_counts, summarise

log = logging.getLogger(__name__)

PER_IMAGE_COLUMNS = (
    "id",
    "patient_id",
    "dice",
    "iou",
    "ref_empty",
    "pred_empty",
    "n_ref_lesions",
    "n_detected",
    "n_false_positives",
    "pred_missing",
)
OUTPUT_FILES = ("per_image.csv", "summary.json")


def _missing_error(pred_dir: Path, missing: list[str], total: int) -> FileNotFoundError:
    shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
    return FileNotFoundError(
        f"{pred_dir / 'masks'}: no prediction for {len(missing)} of {total} images ({shown}); "
        "predict them, or pass --allow-missing to count them as empty predictions"
    )


def _load_pair(
    row: dict[str, str],
    data_dir: Path,
    pred_path: Path | None,
    original_size: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) as boolean arrays on the chosen grid."""
    ref_path = data_dir / (row.get("mask") or f"masks/{row['id']}.png")
    ref = read_png(ref_path) != 0
    plan = PadResize.from_row(row)
    if ref.shape != (plan.size, plan.size):
        raise ValueError(f"{ref_path}: reference mask is {ref.shape}, the manifest says {plan.size}×{plan.size}")
    original_shape = (plan.orig_height, plan.orig_width)

    if pred_path is None:
        pred = np.zeros_like(ref)
    else:
        pred = read_png(pred_path) != 0
        if pred.shape == ref.shape:
            pass  # prepared grid
        elif pred.shape == original_shape:
            # Already on the original grid: bring it onto the prepared one unless we evaluate there.
            if original_size:
                return pred, invert_mask(ref, plan) != 0
            pred = apply_to_mask(pred.astype(np.uint8), plan) != 0
        else:
            raise ValueError(
                f"{pred_path}: prediction is {pred.shape[0]}×{pred.shape[1]}; expected the prepared size "
                f"{plan.size}×{plan.size} or the original size {plan.orig_height}×{plan.orig_width}"
            )
    if original_size:
        return invert_mask(pred, plan) != 0, invert_mask(ref, plan) != 0
    return pred, ref


def evaluate_predictions(
    pred_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "holdout",
    original_size: bool = False,
    lesion_iou: float = 0.2,
    overwrite: bool = False,
    allow_missing: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score `pred_dir` against the `split` of prepared folder `data_dir`; write to `out_dir`.

    Returns the summary dict that is written to ``summary.json``. A missing prediction is an
    error unless `allow_missing`, which counts it as an empty prediction (and says so).
    """
    pred_dir, data_dir, out_dir = Path(pred_dir), Path(data_dir), Path(out_dir)
    if not 0.0 < lesion_iou <= 1.0:
        raise ValueError(f"lesion IoU threshold must be in (0, 1], got {lesion_iou}")
    existing = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir}: already holds an evaluation ({', '.join(existing)}); pass --overwrite to replace it")
    if not (pred_dir / "masks").is_dir():
        raise FileNotFoundError(f"{pred_dir}: no masks/ folder; is it a folder made by `mammoseg predict`?")

    rows = load_manifest(data_dir, split=split)
    if not rows:
        raise ValueError(f"{data_dir / 'manifest.csv'}: no images in split {split!r}")

    pred_paths = {row["id"]: pred_dir / "masks" / f"{row['id']}.png" for row in rows}
    missing = [i for i, p in pred_paths.items() if not p.is_file()]
    if missing and not allow_missing:
        raise _missing_error(pred_dir, missing, len(rows))
    if missing:
        log.warning("%s: %d of %d predictions missing; counted as empty", pred_dir, len(missing), len(rows))

    per_image: list[dict[str, Any]] = []
    for row in tqdm(rows, desc="evaluate", unit="img", disable=not progress):
        image_id = row["id"]
        pred_path = None if image_id in missing else pred_paths[image_id]
        pred, ref = _load_pair(row, data_dir, pred_path, original_size)
        dice, iou = dice_iou(pred, ref)
        lesions = lesion_counts(pred, ref, iou_threshold=lesion_iou)
        per_image.append(
            {
                "id": image_id,
                "patient_id": row["patient_id"],
                "dice": dice,
                "iou": iou,
                "ref_empty": int(not ref.any()),
                "pred_empty": int(not pred.any()),
                "n_ref_lesions": lesions["n_ref"],
                "n_detected": lesions["n_detected"],
                "n_false_positives": lesions["n_false_positive"],
                "pred_missing": int(pred_path is None),
            }
        )

    summary = _summary(per_image, split, original_size, lesion_iou)
    summary.update(pred_dir=str(pred_dir), data_dir=str(data_dir), n_missing=len(missing))
    csv_rows = [{**r, "dice": f"{r['dice']:.6f}", "iou": f"{r['iou']:.6f}"} for r in per_image]
    write_csv_atomic(out_dir / "per_image.csv", csv_rows, PER_IMAGE_COLUMNS)
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _summary(per_image: list[dict[str, Any]], split: str, original_size: bool, lesion_iou: float) -> dict[str, Any]:
    summary: dict[str, Any] = summarise([r["dice"] for r in per_image], [r["iou"] for r in per_image])
    ref_empty = np.array([r["ref_empty"] for r in per_image], dtype=bool)
    pred_empty = np.array([r["pred_empty"] for r in per_image], dtype=bool)
    n_ref = sum(r["n_ref_lesions"] for r in per_image)
    n_det = sum(r["n_detected"] for r in per_image)
    n_fp = sum(r["n_false_positives"] for r in per_image)
    summary.update(
        n_both_empty=int((ref_empty & pred_empty).sum()),
        n_ref_empty_pred_not=int((ref_empty & ~pred_empty).sum()),
        n_ref_not_pred_empty=int((~ref_empty & pred_empty).sum()),
        n_both_nonempty=int((~ref_empty & ~pred_empty).sum()),
        lesion_iou_threshold=float(lesion_iou),
        n_ref_lesions=int(n_ref),
        n_detected_lesions=int(n_det),
        n_false_positives=int(n_fp),
        lesion_sensitivity=(n_det / n_ref) if n_ref else None,
        false_positives_per_image=n_fp / len(per_image),
        split=split,
        grid="original" if original_size else "prepared",
    )
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the terminal: 'n=…, Dice … ± …, IoU … ± …' plus the lesion figures."""
    sens = summary.get("lesion_sensitivity")
    sens_text = "n/a" if sens is None else f"{sens:.3f}"
    return (
        f"n={summary['n']}, Dice {fmt_mean_sd(summary['dice_mean'], summary['dice_sd'])}, "
        f"IoU {fmt_mean_sd(summary['iou_mean'], summary['iou_sd'])}, "
        f"lesion sensitivity {sens_text}, FP/image {summary['false_positives_per_image']:.3f}"
    )
