"""The post-processing chosen on out-of-fold (OOF) predictions, as nnU-Net chooses its own.

Why: each fold's best model never saw its validation images, so its predictions of them are an
honest sample of how the ensemble errs on new images; a rule chosen there needs no other data.

1. **OOF probabilities** (`oof_scores`): fold k's best model (`load_ensemble(run, folds=[k])`,
   `batch_probability`, as predict runs it, without TTA) predicts the images folds.csv puts in
   fold k's validation set, from the prepared folder the run was trained on (model grid).
2. **Scores** (`image_scores`): for each image, the Dice (empty/empty = 1, as
   `mammoseg.evaluation.metrics.dice_iou`) of every rule of the candidate grid (`Candidates`):
   thresholds 0.20, 0.25, ..., 0.80; minimum component areas 0, 8, 16, 32, 64, 128, 256 pixels
   at 256 px, scaled by (image_size / 256)² and rounded; keep every component or only the most
   probable one.
3. **Choice** (`choose_postprocessing`), nnU-Net's rule: start from the default (0.5, no minimum
   area, every component); then, in this order, the best threshold, the best minimum area at that
   threshold, and keeping only the most probable component, each taken only when it raises the OOF
   mean Dice by more than `MIN_GAIN` (so a tie keeps the default) and lowers no fold's mean Dice.
   Why the folds: each fold's images are scored by another model, and the rule is applied to none
   of them but to their average, whose probabilities are smoother; a rule that helps one model's
   images and hurts another's is that model's quirk, not the ensemble's (on the demo, a threshold
   of 0.8 raised the OOF mean Dice by 0.02 while lowering one fold's, and lowered the holdout
   ensemble's Dice from 0.87 to 0.81).

`ensure_postprocessing` does all three after cross-validation and writes `postprocessing.json`
(the choice, the OOF mean Dice before and after each step, the grid, the image count and the run
id of the fold models it was chosen for: when a fold is retrained, it is chosen anew) and
`oof_dice.csv` (each OOF image's Dice before and after).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammoseg.inference.ensemble import batch_probability, load_ensemble
from mammoseg.inference.inputs import InputItem, iter_inputs, prefetched
from mammoseg.inference.postprocess import (
    CONNECTIVITY,
    DEFAULT_THRESHOLD,
    PostProcessing,
    kept_components,
    label_components,
    read_record,
)
from mammoseg.inference.predict import all_cores
from mammoseg.inference.run_identity import fold_digests, id_from_digests
from mammoseg.io import read_csv, write_csv_atomic, write_text_atomic
from mammoseg.layouts import RunLayout
from mammoseg.version import __version__

log = logging.getLogger(__name__)

#: A step is taken only when it raises the OOF mean Dice by more than this (a tie keeps the default).
MIN_GAIN = 0.001
#: Thresholds tried: 0.20 to 0.80 in steps of 0.05 (0.5, the default, among them).
THRESHOLDS = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))
#: Minimum component areas tried, in pixels at 256 px (scaled by (image_size / 256)²).
MIN_AREAS_AT_256 = (0, 8, 16, 32, 64, 128, 256)
#: Format of postprocessing.json.
RECORD_FORMAT = 1
OOF_COLUMNS = ("id", "fold", "ref_empty", "dice_default", "dice_chosen")


@dataclass(frozen=True)
class Candidates:
    """The grid the choice searches: thresholds and minimum areas (model-grid pixels)."""

    thresholds: tuple[float, ...]
    min_areas: tuple[int, ...]

    def __post_init__(self) -> None:
        if DEFAULT_THRESHOLD not in self.thresholds or 0 not in self.min_areas:
            raise ValueError("the candidate grid must hold the default rule (threshold 0.5, minimum area 0)")


def candidate_grid(image_size: int) -> Candidates:
    """The documented grid (module docstring) for models trained at `image_size` pixels."""
    scale = (image_size / 256) ** 2
    return Candidates(THRESHOLDS, tuple(sorted({round(a * scale) for a in MIN_AREAS_AT_256})))


def image_scores(prob: np.ndarray, reference: np.ndarray, grid: Candidates) -> np.ndarray:
    """Dice of one image under every rule of the grid: array (thresholds, min areas, 2) whose last axis
    is keep-most-probable off/on. `prob`: model-grid probability; `reference`: mask (non-zero = mass)."""
    if prob.shape != reference.shape:
        raise ValueError(f"probability shape {prob.shape} != reference shape {reference.shape}")
    ref = reference != 0
    n_ref = int(np.count_nonzero(ref))
    scores = np.empty((len(grid.thresholds), len(grid.min_areas), 2), np.float64)
    for ti, threshold in enumerate(grid.thresholds):
        labels, areas, peaks = label_components(prob, threshold)
        overlap = np.bincount(labels[ref], minlength=len(areas) + 1)[1:]
        for ai, min_area in enumerate(grid.min_areas):
            for ki, keep_most_probable in enumerate((False, True)):
                kept = kept_components(areas, peaks, min_area, keep_most_probable)
                n_pred = int(areas[kept].sum())
                scores[ti, ai, ki] = 1.0 if n_pred + n_ref == 0 else 2.0 * int(overlap[kept].sum()) / (n_pred + n_ref)
    return scores


@dataclass(frozen=True)
class Choice:
    """The chosen rule, the steps that led there, and each image's Dice under the default and the choice."""

    rule: PostProcessing
    steps: list[dict[str, Any]]
    dice_default: np.ndarray
    dice_chosen: np.ndarray


def choose_postprocessing(scores: np.ndarray, grid: Candidates, min_gain: float = MIN_GAIN,
                          folds: Sequence[int] | None = None) -> Choice:
    """nnU-Net's rule (module docstring) on per-image scores (images, thresholds, min areas, 2); with
    `folds` (each image's fold) a step must also lower no fold's mean Dice."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 4 or scores.shape[0] == 0 or scores.shape[1:] != (len(grid.thresholds), len(grid.min_areas), 2):
        raise ValueError(f"scores of shape {scores.shape} do not match the candidate grid")
    fold_of = np.zeros(len(scores), int) if folds is None else np.asarray(folds)
    if fold_of.shape != (len(scores),):
        raise ValueError(f"{fold_of.size} fold numbers for {len(scores)} images")
    by_fold = np.stack([scores[fold_of == k].mean(axis=0) for k in np.unique(fold_of)])
    means = scores.mean(axis=0)
    ti, ai, ki = grid.thresholds.index(DEFAULT_THRESHOLD), grid.min_areas.index(0), 0
    steps = []

    def step(name: str, values: Sequence[Any], index: Callable[[int], tuple[int, int, int]], current: int) -> int:
        row = np.array([means[index(v)] for v in range(len(values))])
        agreed = np.array([bool(np.all(by_fold[(slice(None), *index(v))] >= by_fold[(slice(None), *index(current))]))
                           for v in range(len(values))])
        best = int(np.argmax(row))
        usable = np.flatnonzero(agreed & (row > row[current] + min_gain))
        chosen = int(usable[np.argmax(row[usable])]) if usable.size else current
        steps.append({"step": name, "candidates": {_key(v): float(d) for v, d in zip(values, row)},
                      "folds_agree": {_key(v): bool(a) for v, a in zip(values, agreed)},
                      "best": values[best], "taken": chosen != current, "dice_before": float(row[current]),
                      "dice_after": float(row[chosen])})
        return chosen

    ti = step("threshold", grid.thresholds, lambda v: (v, ai, ki), ti)
    ai = step("min_area", grid.min_areas, lambda v: (ti, v, ki), ai)
    ki = step("keep_most_probable", (False, True), lambda v: (ti, ai, v), ki)
    rule = PostProcessing(grid.thresholds[ti], grid.min_areas[ai], bool(ki))
    default = scores[:, grid.thresholds.index(DEFAULT_THRESHOLD), grid.min_areas.index(0), 0]
    return Choice(rule, steps, default, scores[:, ti, ai, ki])


def _key(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else f"{value:g}"


# --------------------------------------------------------------------------- the run's OOF predictions


def validation_ids(layout: RunLayout) -> dict[int, list[str]]:
    """fold → the ids folds.csv puts in its validation set (errors name the file)."""
    path = layout.folds_csv
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; the out-of-fold images cannot be known without it")
    folds: dict[int, list[str]] = {}
    for row in read_csv(path):
        try:
            folds.setdefault(int(row["fold"]), []).append(row["id"])
        except (KeyError, ValueError):
            raise ValueError(f"{path}: row {row!r} has no id and whole fold number") from None
    return dict(sorted(folds.items()))


@dataclass(frozen=True)
class OofScores:
    """Every OOF image's id, fold, whether its reference is empty, and its scores over the grid."""

    ids: list[str]
    folds: list[int]
    ref_empty: list[bool]
    scores: np.ndarray
    grid: Candidates
    image_size: int


def oof_scores(run_dir: str | os.PathLike, data_dir: str | os.PathLike, device: torch.device,
               batch_size: int = 4) -> OofScores:
    """Each fold's best model on its own validation images of the prepared folder, scored over the grid."""
    layout, data = RunLayout(run_dir), Path(data_dir)
    folds = validation_ids(layout)
    ids, fold_of, empty, scores = [], [], [], []
    image_size, grid = 0, None
    with all_cores(device), torch.inference_mode():
        for fold, members in folds.items():
            ensemble = load_ensemble(layout.root, device, folds=[fold])
            image_size = ensemble.image_size
            grid = grid or candidate_grid(image_size)
            wanted = set(members)
            items = (e for e in iter_inputs([data], "train") if isinstance(e, InputItem) and (e.row or {}).get("id") in wanted)
            found = 0
            for loaded, errors, _n in prefetched(items, image_size, batch_size):
                if errors:
                    raise ValueError(f"{errors[0].input}: {errors[0].reason} (an out-of-fold image of fold {fold})")
                probs = batch_probability(ensemble.members, [li.model_input for li in loaded], device)
                for li, prob in zip(loaded, probs):
                    reference = li.reference if li.reference is not None else np.zeros(prob.shape, np.uint8)
                    if reference.shape != prob.shape:
                        raise ValueError(f"{li.item.input}: prepared at {reference.shape[0]} px, but the run's models "
                                         f"at {image_size} px; the out-of-fold images must be the run's own")
                    ids.append(str((li.item.row or {})["id"]))
                    fold_of.append(fold)
                    empty.append(not reference.any())
                    scores.append(image_scores(prob, reference, grid))
                    found += 1
            if found != len(wanted):
                raise ValueError(f"{data}: holds {found} of the {len(wanted)} train images folds.csv puts in fold "
                                 f"{fold}; the out-of-fold images must come from the prepared folder the run was "
                                 "trained on")
    if grid is None:
        raise ValueError(f"{layout.folds_csv}: lists no images")
    return OofScores(ids, fold_of, empty, np.stack(scores), grid, image_size)


def postprocessing_record(choice: Choice, oof: OofScores, digests: Sequence[tuple[str, bytes]],
                          data_dir: str | os.PathLike) -> dict[str, Any]:
    """postprocessing.json's content (docs/training.md, "Post-processing")."""
    return {
        "format": RECORD_FORMAT,
        "threshold": choice.rule.threshold, "min_area": choice.rule.min_area,
        "keep_most_probable": choice.rule.keep_most_probable,
        "image_size": oof.image_size, "connectivity": CONNECTIVITY,
        "oof_dice_default": float(np.mean(choice.dice_default)), "oof_dice_chosen": float(np.mean(choice.dice_chosen)),
        "steps": choice.steps, "min_gain": MIN_GAIN,
        "grid": {"thresholds": list(oof.grid.thresholds), "min_areas": list(oof.grid.min_areas),
                 "keep_most_probable": [False, True]},
        "n_images": len(oof.ids),
        "n_images_by_fold": {str(k): oof.folds.count(k) for k in sorted(set(oof.folds))},
        "run_id": id_from_digests(digests),
        "checkpoints": {name: digest.hex() for name, digest in digests},
        "data_dir": str(Path(data_dir).resolve()), "mammoseg": __version__,
    }


def ensure_postprocessing(run_dir: str | os.PathLike, data_dir: str | os.PathLike, device: str | torch.device = "cpu",
                          batch_size: int = 4) -> tuple[dict[str, Any], bool]:
    """The run's post-processing record, chosen on the OOF predictions when the run has none or its
    record belongs to other fold models; (record, whether it was chosen now). Every fold must be trained."""
    layout = RunLayout(run_dir)
    digests = fold_digests(layout.root)
    existing = _readable_record(layout)
    if existing is not None and existing.get("run_id") == id_from_digests(digests) and layout.oof_dice.is_file():
        return existing, False
    oof = oof_scores(layout.root, data_dir, torch.device(device), batch_size)
    choice = choose_postprocessing(oof.scores, oof.grid, folds=oof.folds)
    record = postprocessing_record(choice, oof, digests, data_dir)
    rows = [{"id": i, "fold": k, "ref_empty": int(e), "dice_default": f"{d:.6f}", "dice_chosen": f"{c:.6f}"}
            for i, k, e, d, c in zip(oof.ids, oof.folds, oof.ref_empty, choice.dice_default, choice.dice_chosen)]
    write_csv_atomic(layout.oof_dice, rows, OOF_COLUMNS)
    write_text_atomic(layout.postprocessing, json.dumps(record, indent=2) + "\n")  # last: it marks the choice done
    return record, True


def _readable_record(layout: RunLayout) -> dict[str, Any] | None:
    """The existing record, or None when there is none or it cannot be read (it is then chosen anew)."""
    try:
        return read_record(layout)
    except ValueError as exc:
        log.warning("%s; choosing the post-processing anew", exc)
        return None


def describe_record(record: Mapping[str, Any]) -> str:
    """One line: the chosen rule and the OOF mean Dice before and after."""
    rule = PostProcessing(float(record["threshold"]), int(record["min_area"]), bool(record["keep_most_probable"]))
    return (f"post-processing chosen on {record.get('n_images', '?')} out-of-fold images: {rule.describe()}; "
            f"OOF mean Dice {float(record['oof_dice_default']):.4f} -> {float(record['oof_dice_chosen']):.4f}")
