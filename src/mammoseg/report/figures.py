"""The report's figures: Figure 2 panels (best / median / worst cases), every fold's learning curves, and
the lesion-level FROC of every run."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from mammoseg.evaluation.runs import RunInfo
from mammoseg.io import read_csv, read_png
from mammoseg.layouts import EvaluationLayout, PredictionLayout, PreparedLayout, RunLayout
from mammoseg.plots import plot_froc, plot_learning_curves, save_figure

log = logging.getLogger(__name__)


def has_reference_mass(row: Mapping[str, str]) -> bool:
    """Whether a per_image.csv row has a reference mass (rows of evaluations without `ref_empty` count as yes)."""
    return str(row.get("ref_empty", "0")).strip() not in ("1", "1.0", "True", "true")


def pick_cases(per_image: Sequence[Mapping[str, str]], n: int = 3) -> list[tuple[str, dict[str, str]]]:
    """(label, row) for the best, median and worst image by Dice among images with a reference mass.

    Images without a reference mass are left out: an empty–empty image scores Dice 1 by
    convention and would be "best" while showing nothing; they are counted in the summary.
    """
    rows = [dict(r) for r in per_image if r.get("dice") not in (None, "", "nan") and has_reference_mass(r)]
    rows.sort(key=lambda r: (-float(r["dice"]), r["id"]))
    if not rows:
        return []
    picks = [("best", 0), ("median", len(rows) // 2), ("worst", len(rows) - 1)]
    if n > 3:  # more cases: evenly spaced ranks between best and worst
        picks = [(f"rank {i + 1}", i) for i in np.linspace(0, len(rows) - 1, n).round().astype(int)]
    seen: set[int] = set()
    out = []
    for label, index in picks:
        if index not in seen:
            seen.add(index)
            out.append((label, rows[index]))
    return out


def _tint(image: np.ndarray, mask: np.ndarray | None, colour: tuple[float, float, float]) -> np.ndarray:
    grey = image.astype(np.float32)
    grey = grey / 65535.0 if image.dtype == np.uint16 else grey / 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if mask is not None:
        m = mask > 0
        rgb[m] = 0.55 * rgb[m] + 0.45 * np.asarray(colour, np.float32)
    return rgb


def figure2(run: RunInfo, path: Path, n_cases: int = 3) -> Path | None:
    """Figure-2-style panel: rows = cases, columns = image, reference, prediction.

    Tints are the Okabe–Ito blue (reference) and orange (prediction) that `mammoseg view` uses."""
    if run.eval_dir is None or not EvaluationLayout(run.eval_dir).per_image.is_file():
        run.notes.append("Figure 2 skipped: no per_image.csv")
        return None
    if run.data_dir is None or not PreparedLayout(run.data_dir).manifest.is_file():
        run.notes.append("Figure 2 skipped: prepared data folder unknown (give --data)")
        return None
    if run.pred_dir is None:
        run.notes.append("Figure 2 skipped: prediction folder not found")
        return None
    per_image = read_csv(EvaluationLayout(run.eval_dir).per_image)
    cases = pick_cases(per_image, n_cases)
    _note_cases_without_mass(run, per_image)
    if not cases:
        run.notes.append("Figure 2 skipped: no evaluated image has a reference mass")
        return None
    manifest = {r["id"]: r for r in read_csv(PreparedLayout(run.data_dir).manifest)}
    panels = []
    for label, row in cases:
        m = manifest.get(row["id"])
        pred_path = PredictionLayout(run.pred_dir).mask(row["id"])
        if m is None or not pred_path.is_file():
            run.notes.append(f"Figure 2: case {row['id']} lacks its image or prediction")
            continue
        image = read_png(run.data_dir / m["image"])
        ref = read_png(run.data_dir / m["mask"]) if m.get("mask") and (run.data_dir / m["mask"]).is_file() else None
        pred = read_png(pred_path)
        if pred.shape != image.shape:  # a prediction on the original grid: show it at the prepared size
            pred = cv2.resize(pred, image.shape[::-1], interpolation=cv2.INTER_NEAREST)
        panels.append((label, row, image, ref, pred))
    if not panels:
        run.notes.append("Figure 2 skipped: no usable cases")
        return None
    fig = Figure(figsize=(9, 3.1 * len(panels)))
    axes = fig.subplots(len(panels), 3, squeeze=False)
    for i, (label, row, image, ref, pred) in enumerate(panels):
        shown = [
            (_tint(image, None, (0, 0, 0)), f"{row['id']} ({label})"),
            (_tint(image, ref, (0.0, 0.447, 0.698)), "reference"),
            (_tint(image, pred, (0.902, 0.624, 0.0)), f"prediction — DCS {float(row['dice']):.3f}"),
        ]
        for ax, (img, title) in zip(axes[i], shown):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{run.model} ({run.weights}) — {run.label}", fontsize=10)
    save_figure(fig, path)
    return path


def _note_cases_without_mass(run: RunInfo, per_image: Sequence[Mapping[str, str]]) -> None:
    """Say how many images Figure 2 leaves out for want of a reference mass (they stay in the summary)."""
    without = [r for r in per_image if not has_reference_mass(r)]
    both_empty = sum(1 for r in without if str(r.get("pred_empty", "")).strip() == "1")
    run.figure2_text = (
        f"Best / median / worst holdout cases by Dice among the {len(per_image) - len(without)} images with a "
        f"reference mass. {len(without)} image(s) without a reference mass are counted in the summary but not shown "
        f"({both_empty} with no predicted mass either, Dice 1 by convention; {len(without) - both_empty} with a "
        "predicted mass, Dice 0)."
    )


def learning_curves(run: RunInfo, path: Path) -> Path | None:
    """Loss (train and validation) and validation Dice per epoch for every fold of a run."""
    folds = RunLayout(run.run_dir).fold_logs()
    if not folds:
        run.notes.append("learning curves skipped: no fold*/log.csv")
        return None
    curves = [(f.dir.name, read_csv(f.log)) for f in folds]
    plot_learning_curves(path, curves, f"{run.model} ({run.weights}) — {run.label}")
    return path


def froc_section(runs: Sequence[RunInfo], out: Path) -> list[str]:
    """report.md's FROC section and `froc.png`: every run whose evaluation has a FROC curve (none: no section)."""
    curves, table = [], []
    for r in runs:
        froc = (r.summary or {}).get("froc")
        curve = EvaluationLayout(r.eval_dir).froc if r.eval_dir is not None else None
        if froc and curve is not None and curve.is_file():
            curves.append((r.label, read_csv(curve), froc["operating_points"]))
            table.append(f"| {r.label} | {float(froc['mean_sensitivity']):.3f} | "
                         + " | ".join(f"{float(v):.3f}" for v in froc["operating_points"].values()) + " |")
    if not curves:
        return []
    plot_froc(out / "froc.png", curves, "lesion-level FROC")
    points = list(curves[0][2])
    return ["## FROC", "",
            "Lesion sensitivity against false positives per image as the probability threshold sweeps "
            "(docs/method.md, \"Lesion-level FROC\"); the mean sensitivity is the mean of the seven operating points.",
            "", "| Run | Mean sensitivity | " + " | ".join(f"{p} FP/image" for p in points) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in points) + " |", *table, "", "![FROC](froc.png)", ""]
