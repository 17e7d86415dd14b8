"""Evaluate predicted masks against reference masks: per-image Dice/IoU and lesion counts.

Two kinds of reference. A prepared folder (`evaluate_predictions`): the reference masks of
one split (``masks/<id>.png``, the manifest's ``mask`` column) against ``<pred>/masks/<id>.png``.
Or a plain folder of masks (`evaluate_folders`, ``--ref DIR``): PNG files matched to the
predicted PNGs by file stem, as folder-against-folder evaluations of other tools work; names
found on one side only and size mismatches are listed in ``errors.csv``, never guessed.
Both write ``per_image.csv`` and ``summary.json`` (docs/architecture.md, "Evaluation folder").

Grids. By default both masks are compared on the prepared (padded, resized) grid. With
``original_size=True`` both are mapped back onto each image's original pixel grid with
``mammoseg.geometry.invert_mask``, so the scores are in the units a radiologist's image has;
the reference there is the prepared mask mapped back (the original annotation is not kept
in the prepared folder). A prediction already on the original grid (``mammoseg predict`` on
DICOM inputs) is recognised by its shape and is mapped onto the prepared grid when needed.

Empty masks follow ``mammoseg.evaluation.metrics`` (both empty: 1; one empty: 0), and the summary
counts how many images were of each kind so a mean can be read correctly.

FROC (`mammoseg.evaluation.froc`). When every scored image has a probability map
(``<pred>/prob/<id>.png``, ``predict --save-prob``) the lesion-level FROC is computed on the grid
the masks are scored on: the map is mapped there as the masks are (area averaging onto the
prepared grid, bilinear back onto the original one). The curve goes to ``froc.csv``, the operating
points to summary.json's ``froc``. Otherwise ``froc`` is null and ``froc_skipped`` says why. The
folder-against-folder evaluation computes no FROC. Where the map is on the scoring grid (a
prepared input scored on the prepared grid, a DICOM input with ``original_size``), the point at
the predict threshold 0.5 is exactly the lesion count of ``per_image.csv``; a mapped map can
differ from the mapped mask by boundary pixels.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mammoseg.evaluation.froc import ImageSweep, froc_curve, froc_summary, sweep_image, sweep_thresholds
from mammoseg.evaluation.metrics import dice_iou, fmt_mean_sd, lesion_counts, summarise
from mammoseg.folders import OutputFolder, open_output_folder
from mammoseg.geometry import PadResize, apply_to_image, apply_to_mask, invert_mask, invert_probability
from mammoseg.io import read_png, write_csv_atomic, write_text_atomic
from mammoseg.layouts import EvaluationLayout, PredictionLayout, PreparedLayout
from mammoseg.manifest import load_manifest

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
FOLDER_ERRORS_COLUMNS = ("id", "pred", "ref", "reason")
FROC_COLUMNS = ("threshold", "sensitivity", "fp_per_image", "n_detected", "n_false_positives")
#: A saved probability map holds round(probability × this) as uint16 (`predict --save-prob`).
SAVED_PROB_SCALE = 65535


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
    ref_path = data_dir / row["mask"] if row.get("mask") else PreparedLayout(data_dir).mask(row["id"])
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


def _load_prob(row: dict[str, str], prob_path: Path, original_size: bool) -> np.ndarray:
    """The saved probability map (float32 in [0, 1]) on the grid the masks are scored on."""
    saved = read_png(prob_path)
    if saved.dtype != np.uint16 or saved.ndim != 2:
        raise ValueError(f"{prob_path}: a probability map must be a 16-bit greyscale PNG "
                         f"(predict --save-prob writes one), got {saved.dtype} of shape {saved.shape}")
    plan = PadResize.from_row(row)
    if saved.shape == (plan.orig_height, plan.orig_width) and saved.shape != (plan.size, plan.size):
        if not original_size:
            saved = apply_to_image(saved, plan)  # area averaging, as the mask's coverage
        return saved.astype(np.float32) / SAVED_PROB_SCALE
    if saved.shape != (plan.size, plan.size):
        raise ValueError(
            f"{prob_path}: probability map is {saved.shape[0]}×{saved.shape[1]}; expected the prepared size "
            f"{plan.size}×{plan.size} or the original size {plan.orig_height}×{plan.orig_width}"
        )
    prob = saved.astype(np.float32) / SAVED_PROB_SCALE
    return invert_probability(prob, plan) if original_size else prob


def _froc_unavailable(pred_dir: Path, ids: list[str], missing: list[str]) -> str | None:
    """Why no FROC can be computed (some image lacks a probability map), or None."""
    without = [i for i in ids if i in missing or not PredictionLayout(pred_dir).prob(i).is_file()]
    if not without:
        return None
    shown = ", ".join(without[:3]) + (", …" if len(without) > 3 else "")
    return (f"no probability map for {len(without)} of {len(ids)} images ({shown}) in "
            f"{PredictionLayout(pred_dir).prob(without[0]).parent}; predict with --save-prob for a FROC")


def _predict_threshold(pred_dir: Path) -> float | None:
    """The threshold `predict` made the masks with (predict.json), when it recorded a usable one."""
    try:
        value = json.loads(PredictionLayout(pred_dir).summary.read_text(encoding="utf-8")).get("threshold")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and 0.0 < value <= 1.0 else None


def _open_evaluation(out_dir: Path, inputs: list[Path], overwrite: bool) -> OutputFolder:
    """The evaluation folder: new, or evaluate's own; a finished evaluation is replaced only with `overwrite`
    (a failed one, which left only errors.csv, is simply redone)."""
    folder = open_output_folder(out_dir, "evaluate", inputs=inputs, owned=EvaluationLayout.outputs(),
                                overwrite=overwrite, resume=True)
    layout = EvaluationLayout(out_dir)
    finished = [path.name for path in (layout.per_image, layout.summary) if path.exists()]
    if folder.continued and finished:
        folder.close()
        raise FileExistsError(f"{out_dir}: already holds an evaluation ({', '.join(finished)}); "
                              "pass --overwrite to replace it")
    return folder


@dataclass(frozen=True)
class Scoring:
    """What is scored against a prepared folder, and how: which split, on which grid (the prepared
    one, or each image's original grid), the IoU a detected lesion needs, and whether a missing
    prediction counts as empty instead of failing."""

    split: str = "holdout"
    original_size: bool = False
    lesion_iou: float = 0.2
    allow_missing: bool = False

    def check(self) -> None:
        if not 0.0 < self.lesion_iou <= 1.0:
            raise ValueError(f"lesion IoU threshold must be in (0, 1], got {self.lesion_iou}")


def evaluate_predictions(
    pred_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    scoring: Scoring = Scoring(),
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score `pred_dir` against the `scoring.split` of prepared folder `data_dir`; write to `out_dir`.

    Returns the summary dict that is written to ``summary.json``. A missing prediction is an
    error unless `scoring.allow_missing`, which counts it as an empty prediction (and says so).
    """
    pred_dir, data_dir, out_dir = Path(pred_dir), Path(data_dir), Path(out_dir)
    scoring.check()
    if not PredictionLayout(pred_dir).masks.is_dir():
        raise FileNotFoundError(f"{pred_dir}: no masks/ folder; is it a folder made by `mammoseg predict`?")
    rows = load_manifest(data_dir, split=scoring.split)
    if not rows:
        raise ValueError(f"{PreparedLayout(data_dir).manifest}: no images in split {scoring.split!r}")
    missing = [r["id"] for r in rows if not PredictionLayout(pred_dir).mask(r["id"]).is_file()]
    if missing and not scoring.allow_missing:  # refused before the evaluation folder is made
        raise _missing_error(pred_dir, missing, len(rows))
    with _open_evaluation(out_dir, [pred_dir, data_dir], overwrite):
        return _score_prepared(rows, (pred_dir, data_dir, out_dir), scoring, progress)


def _score_prepared(rows: list[dict[str, str]], folders: tuple[Path, Path, Path], scoring: Scoring,
                    progress: bool) -> dict[str, Any]:
    pred_dir, data_dir, out_dir = folders
    original_size, lesion_iou, allow_missing = scoring.original_size, scoring.lesion_iou, scoring.allow_missing
    pred_paths = {row["id"]: PredictionLayout(pred_dir).mask(row["id"]) for row in rows}
    missing = [i for i, p in pred_paths.items() if not p.is_file()]
    if missing and not allow_missing:
        raise _missing_error(pred_dir, missing, len(rows))
    if missing:
        log.warning("%s: %d of %d predictions missing; counted as empty", pred_dir, len(missing), len(rows))

    froc_skipped = _froc_unavailable(pred_dir, [row["id"] for row in rows], missing)
    predict_threshold = _predict_threshold(pred_dir)
    thresholds = sweep_thresholds([predict_threshold] if predict_threshold is not None else [])
    per_image: list[dict[str, Any]] = []
    sweeps: list[ImageSweep] = []
    for row in tqdm(rows, desc="evaluate", unit="img", disable=not progress):
        image_id = row["id"]
        pred_path = None if image_id in missing else pred_paths[image_id]
        pred, ref = _load_pair(row, data_dir, pred_path, original_size)
        per_image.append(score_pair(image_id, row["patient_id"], pred, ref, lesion_iou, pred_path is None))
        if froc_skipped is None:
            prob = _load_prob(row, PredictionLayout(pred_dir).prob(image_id), original_size)
            sweeps.append(sweep_image(prob, ref, thresholds, lesion_iou))

    summary = summarise_per_image(per_image, scoring.split, "original" if original_size else "prepared", lesion_iou)
    summary.update(pred_dir=str(pred_dir), data_dir=str(data_dir), n_missing=len(missing))
    if froc_skipped is None and not any(s.n_ref for s in sweeps):
        froc_skipped = f"no reference lesions in split {scoring.split!r}, so no lesion sensitivity"
    curve = None if froc_skipped is not None else froc_curve(sweeps, thresholds)
    if curve is None:
        log.info("FROC skipped: %s", froc_skipped)
    summary.update(froc=None if curve is None else froc_summary(curve, lesion_iou, predict_threshold),
                   froc_skipped=froc_skipped)
    _write_evaluation(out_dir, per_image, summary, None if curve is None else curve.rows())
    return summary


def score_pair(
    image_id: str, patient_id: str, pred: np.ndarray, ref: np.ndarray, lesion_iou: float, pred_missing: bool = False
) -> dict[str, Any]:
    """One row of per_image.csv (numbers unformatted) for a (prediction, reference) pair."""
    dice, iou = dice_iou(pred, ref)
    lesions = lesion_counts(pred, ref, iou_threshold=lesion_iou)
    return {
        "id": image_id,
        "patient_id": patient_id,
        "dice": dice,
        "iou": iou,
        "ref_empty": int(not np.any(ref)),
        "pred_empty": int(not np.any(pred)),
        "n_ref_lesions": lesions["n_ref"],
        "n_detected": lesions["n_detected"],
        "n_false_positives": lesions["n_false_positive"],
        "pred_missing": int(pred_missing),
    }


def _write_evaluation(out_dir: Path, per_image: list[dict[str, Any]], summary: dict[str, Any],
                      froc_rows: list[dict[str, Any]] | None = None) -> None:
    """per_image.csv, the FROC curve (when there is one) and, last, summary.json."""
    csv_rows = [{**r, "dice": f"{r['dice']:.6f}", "iou": f"{r['iou']:.6f}"} for r in per_image]
    layout = EvaluationLayout(out_dir)
    write_csv_atomic(layout.per_image, csv_rows, PER_IMAGE_COLUMNS)
    if froc_rows is not None:
        froc_csv = [{**r, "threshold": repr(r["threshold"]), "sensitivity": f"{r['sensitivity']:.6f}",
                     "fp_per_image": f"{r['fp_per_image']:.6f}"} for r in froc_rows]
        write_csv_atomic(layout.froc, froc_csv, FROC_COLUMNS)
    write_text_atomic(layout.summary, json.dumps(summary, indent=2) + "\n")


def summarise_per_image(
    per_image: list[dict[str, Any]], split: str | None, grid: str, lesion_iou: float
) -> dict[str, Any]:
    """summary.json's figures from per-image rows: means, SDs, CI, empty-mask kinds, lesion counts.

    The CI resamples patients when every row names one (`ci_unit` "patient"), else images."""
    summary: dict[str, Any] = summarise([r["dice"] for r in per_image], [r["iou"] for r in per_image],
                                        patients=[r.get("patient_id") or "" for r in per_image])
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
        grid=grid,
    )
    return summary


# --------------------------------------------------------------------------- folder against folder


def mask_files(folder: str | os.PathLike, role: str) -> dict[str, Path]:
    """The PNG masks of `folder` by file stem (exact, case-sensitive).

    A folder holding no PNG of its own but a ``masks/`` folder (one written by
    ``mammoseg predict``) is read through ``masks/``. Two files with one stem are an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (the {role} masks)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files and PredictionLayout(folder).masks.is_dir():  # a prediction folder: its masks
        folder = PredictionLayout(folder).masks
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{folder}: no PNG files (the {role} masks)")
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise ValueError(f"{folder}: two {role} masks named {path.stem!r} ({by_stem[path.stem].name}, {path.name})")
        by_stem[path.stem] = path
    return by_stem


def _name_errors(preds: dict[str, Path], refs: dict[str, Path], allow_missing: bool) -> list[dict[str, str]]:
    errors = []
    if not allow_missing:
        errors += [{"id": s, "pred": "", "ref": str(refs[s]), "reason": "no predicted mask with this name"}
                   for s in sorted(refs.keys() - preds.keys())]
    errors += [{"id": s, "pred": str(preds[s]), "ref": "", "reason": "no reference mask with this name"}
               for s in sorted(preds.keys() - refs.keys())]
    return errors


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    lesion_iou: float = 0.2,
    overwrite: bool = False,
    allow_missing: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a folder of predicted PNG masks against a folder of reference PNG masks (non-zero = mass).

    Masks are paired by file stem. A stem on one side only, or a pair of different sizes, is
    listed in ``errors.csv`` and fails the evaluation (nothing is guessed). `allow_missing`
    counts a reference without a prediction as an empty prediction, as with a prepared folder,
    and leaves a prediction without a reference unscored (still listed in ``errors.csv``).
    """
    out_dir = Path(out_dir)
    if not 0.0 < lesion_iou <= 1.0:
        raise ValueError(f"lesion IoU threshold must be in (0, 1], got {lesion_iou}")
    preds, refs = mask_files(pred_dir, "predicted"), mask_files(ref_dir, "reference")
    with _open_evaluation(out_dir, [Path(pred_dir), Path(ref_dir)], overwrite):
        return _score_folders(preds, refs, Path(pred_dir), Path(ref_dir), out_dir, lesion_iou, allow_missing, progress)


def _score_folders(preds: dict[str, Path], refs: dict[str, Path], pred_dir: Path, ref_dir: Path, out_dir: Path,
                   lesion_iou: float, allow_missing: bool, progress: bool) -> dict[str, Any]:
    errors = _name_errors(preds, refs, allow_missing)
    fatal = len(errors) if not allow_missing else 0
    if not preds.keys() & refs.keys():
        write_csv_atomic(EvaluationLayout(out_dir).errors, errors, FOLDER_ERRORS_COLUMNS)
        raise ValueError(f"{pred_dir} and {ref_dir}: no mask names in common; nothing to score "
                         f"(names listed in {EvaluationLayout(out_dir).errors})")
    per_image: list[dict[str, Any]] = []
    for stem in tqdm(sorted(refs), desc="evaluate", unit="img", disable=not progress):
        if stem not in preds and not allow_missing:
            continue
        ref = read_png(refs[stem]) != 0
        pred = read_png(preds[stem]) != 0 if stem in preds else np.zeros_like(ref)
        if pred.shape != ref.shape:
            errors.append({"id": stem, "pred": str(preds[stem]), "ref": str(refs[stem]),
                           "reason": f"size mismatch: prediction {pred.shape[0]}×{pred.shape[1]}, "
                                     f"reference {ref.shape[0]}×{ref.shape[1]}"})
            fatal += 1
            continue
        per_image.append(score_pair(stem, "", pred, ref, lesion_iou, stem not in preds))
    write_csv_atomic(EvaluationLayout(out_dir).errors, errors, FOLDER_ERRORS_COLUMNS)
    if fatal:
        raise _folder_error(out_dir, errors, fatal, Path(pred_dir), Path(ref_dir))
    summary = summarise_per_image(per_image, None, "as given", lesion_iou)
    n_missing = sum(r["pred_missing"] for r in per_image)
    summary.update(pred_dir=str(pred_dir), ref_dir=str(ref_dir), data_dir=None, n_missing=n_missing,
                   n_unscored_predictions=len(preds.keys() - refs.keys()), froc=None,
                   froc_skipped="a folder-against-folder evaluation (--ref) computes no FROC")
    if n_missing:
        log.warning("%s: %d of %d predictions missing; counted as empty", pred_dir, n_missing, len(per_image))
    _write_evaluation(out_dir, per_image, summary)
    return summary


def _folder_error(out_dir: Path, errors: list[dict[str, str]], fatal: int, pred: Path, ref: Path) -> ValueError:
    shown = "; ".join(f"{e['id']}: {e['reason']}" for e in errors[:3]) + ("; …" if len(errors) > 3 else "")
    hint = " (--allow-missing counts a missing prediction as empty)" if any(not e["pred"] for e in errors) else ""
    return ValueError(
        f"{pred} against {ref}: {fatal} problem(s), all listed in {EvaluationLayout(out_dir).errors}: {shown}{hint}"
    )


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the terminal: 'n=…, Dice … ± …, IoU … ± …' plus the lesion figures (and the
    FROC's mean sensitivity when there is one)."""
    sens = summary.get("lesion_sensitivity")
    sens_text = "n/a" if sens is None else f"{sens:.3f}"
    froc = summary.get("froc")
    froc_text = f", FROC mean sensitivity {froc['mean_sensitivity']:.3f}" if froc else ""
    return (
        f"n={summary['n']}, Dice {fmt_mean_sd(summary['dice_mean'], summary['dice_sd'])}, "
        f"IoU {fmt_mean_sd(summary['iou_mean'], summary['iou_sd'])}, "
        f"lesion sensitivity {sens_text}, FP/image {summary['false_positives_per_image']:.3f}{froc_text}"
    )
