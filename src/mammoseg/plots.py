"""Figures shared by training, the report and the view: learning curves, FROC curves, and saving a figure atomically.

Uses matplotlib's object API (`Figure` with the Agg canvas), never `pyplot`, so importing
mammoseg does not change the backend of a notebook or script that uses it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mammoseg.evaluation.froc import envelope
from mammoseg.io import atomic_path

#: One fold's epoch log: rows with epoch, phase, train_loss, val_loss, val_dice (numbers or CSV strings).
LogRows = Sequence[Mapping[str, Any]]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write `fig` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def _column(rows: LogRows, name: str) -> list[float]:
    out = []
    for row in rows:
        value = row.get(name)
        out.append(math.nan if value in (None, "") else float(value))
    return out


def _phase_changes(rows: LogRows, epochs: list[float]) -> set[float]:
    phases = [row.get("phase", "") for row in rows]
    return {0.5 * (epochs[i - 1] + epochs[i]) for i in range(1, len(phases)) if phases[i] != phases[i - 1]}


def plot_learning_curves(path: str | os.PathLike, curves: Sequence[tuple[str, LogRows]], title: str) -> None:
    """Train/validation loss and validation Dice per epoch, one colour per fold; the loss-phase
    change (combo → Focal Tversky) as a dotted line. `curves` is [(fold name, log rows)]."""
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_dice = fig.subplots(1, 2)
    changes: set[float] = set()
    for k, (name, rows) in enumerate(curves):
        if not rows:
            continue
        colour = f"C{k % 10}"
        epochs = _column(rows, "epoch")
        ax_loss.plot(epochs, _column(rows, "train_loss"), color=colour, ls="--", lw=1, marker="o", ms=2,
                     label=f"{name} train")
        ax_loss.plot(epochs, _column(rows, "val_loss"), color=colour, lw=1.5, marker="o", ms=2, label=f"{name} val")
        ax_dice.plot(epochs, _column(rows, "val_dice"), color=colour, lw=1.5, marker="o", ms=2, label=name)
        changes |= _phase_changes(rows, epochs)
    for x in sorted(changes):
        for ax in (ax_loss, ax_dice):
            ax.axvline(x, color="grey", ls=":", lw=1)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (dotted line: combo → Focal Tversky)")
    ax_dice.set(xlabel="epoch", ylabel="validation Dice (threshold 0.5)", title="validation Dice", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if ax is ax_loss else 1)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


#: One model's FROC for `plot_froc`: (label, froc.csv rows with fp_per_image and sensitivity,
#: operating points as summary.json's ``froc`` writes them: {"0.125": sensitivity, ...}).
FrocLine = tuple[str, Sequence[Mapping[str, Any]], Mapping[str, float]]


def plot_froc(path: str | os.PathLike, lines: Sequence[FrocLine], title: str) -> None:
    """Lesion sensitivity against false positives per image, one colour per model, on a log-2 axis
    from 1/8 to 8 FP/image: the best sensitivity within each FP budget (`froc.envelope`, the
    operating-point rule), as a staircase; the operating points as dots. FP levels of 0 lie off a log
    axis and are left out of the line (their sensitivity is in the dots)."""
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for k, (label, rows, points) in enumerate(lines):
        colour = f"C{k % 10}"
        fp, sens = envelope([float(r["fp_per_image"]) for r in rows], [float(r["sensitivity"]) for r in rows])
        shown = bool((fp > 0).any())
        if shown:  # the staircase runs on to the axis' end: no budget beyond the sweep's lowers it
            x, y = np.append(fp[fp > 0], max(8.0, fp[-1])), np.append(sens[fp > 0], sens[-1])
            ax.step(x, y, where="post", color=colour, lw=1.5, label=label)
        marks = sorted((float(x), float(s)) for x, s in points.items())
        ax.plot([m[0] for m in marks], [m[1] for m in marks], color=colour, ls="none", marker="o", ms=4,
                label=None if shown else label)
    ticks = [0.125, 0.25, 0.5, 1, 2, 4, 8]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    ax.set(xlim=(0.125, 8), ylim=(0, 1.02), xlabel="false positives per image", ylabel="lesion sensitivity",
           title=title)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
