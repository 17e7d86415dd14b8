"""The paper's Table 2 and Figure 2 — and every fold's learning curves — for a set of runs.

Input: run folders (config.yaml names the model and its pretrained weights; fold*/log.csv
holds the curves) and their evaluation folders (summary.json, per_image.csv). Output:
`table2.md` / `table2.csv` (with the published figures of Isosalo, Mustonen et al. 2022
beside them), `figure2_<run>.png` (best / median / worst cases by Dice),
`learning_curves_<run>.png`, `froc.png` (the lesion-level FROC of every run whose evaluation
has one, with their operating points in report.md), and `report.md`, the index linking them.

Each run's section states the post-processing chosen on its out-of-fold predictions
(postprocessing.json: threshold, minimum component area, most probable component only) and the
out-of-fold mean Dice before and after it. Next to Table 2, report.md says what produced each run (image size, epochs per phase, initial
weights, folds, mammoseg version, date: `mammoseg.evaluation.runs.RunSettings`) and says in one
sentence when a run's numbers are not comparable with the paper's 512 px ones (smaller or larger
images, fewer epochs than the `paper` preset, another number of folds, random initial weights).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.figure import Figure

from mammoseg.config import load_config
from mammoseg.evaluation.runs import RANDOM_INIT, RunInfo, RunSettings, load_run
from mammoseg.folders import open_output_folder
from mammoseg.io import read_csv, read_png, write_csv_atomic, write_text_atomic
from mammoseg.layouts import EvaluationLayout, PredictionLayout, PreparedLayout, RunLayout
from mammoseg.manifest import UniqueIds
from mammoseg.plots import plot_froc, plot_learning_curves, save_figure
from mammoseg.version import __version__

log = logging.getLogger(__name__)

#: The paper's Table 2 (docs/method.md): (dataset, model, weights, DCS mean, DCS SD or None).
#: The paper's IoU is not restated here, so it is left empty rather than guessed.
PAPER_TABLE2: tuple[tuple[str, str, str, float, float | None], ...] = (
    ("OUDSM", "ResNet34-UNet", "ImageNet", 0.7677, 0.2134),
    ("OUDSM", "ResNet22-UNet", "GMIC", 0.7189, None),
    ("OUDSM", "ResNet34-FPN", "ImageNet", 0.7328, None),
    ("OUDSM", "ResNet22-FPN", "GMIC", 0.6858, None),
    ("INbreast", "ResNet34-UNet", "ImageNet", 0.7890, None),
    ("INbreast", "ResNet22-UNet", "GMIC", 0.8430, 0.1091),
    ("INbreast", "ResNet34-FPN", "ImageNet", 0.8015, None),
    ("INbreast", "ResNet22-FPN", "GMIC", 0.8050, None),
)
PAPER_SOURCE = "Isosalo, Mustonen et al. 2022"
TABLE_COLUMNS = (
    "source", "dataset", "model", "pretrained_weights", "n",
    "dcs_mean", "dcs_sd", "iou_mean", "iou_sd", "paper_dcs_oudsm", "paper_dcs_inbreast", "run",
)


# --------------------------------------------------------------------------- Table 2


def _fmt(mean: Any, sd: Any = None) -> str:
    if mean is None or mean == "" or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{float(mean):.4f}"
    if sd is not None and sd != "" and not (isinstance(sd, float) and math.isnan(sd)):
        text += f" ± {float(sd):.4f}"
    return text


def _paper_dcs(model: str, dataset: str) -> float | None:
    for ds, m, _w, mean, _sd in PAPER_TABLE2:
        if ds == dataset and m == model:
            return mean
    return None


def table2_rows(runs: Sequence[RunInfo]) -> list[dict[str, Any]]:
    """CSV rows: one per run, then the paper's published rows."""
    rows: list[dict[str, Any]] = []
    for r in runs:
        s = r.summary or {}
        rows.append({
            "source": "this run", "dataset": r.dataset, "model": r.model, "pretrained_weights": r.weights,
            "n": s.get("n", ""), "dcs_mean": s.get("dice_mean", ""), "dcs_sd": s.get("dice_sd", ""),
            "iou_mean": s.get("iou_mean", ""), "iou_sd": s.get("iou_sd", ""),
            "paper_dcs_oudsm": _paper_dcs(r.model, "OUDSM") or "",
            "paper_dcs_inbreast": _paper_dcs(r.model, "INbreast") or "", "run": str(r.run_dir),
        })
    for ds, m, w, mean, sd in PAPER_TABLE2:
        rows.append({
            "source": PAPER_SOURCE, "dataset": ds, "model": m, "pretrained_weights": w, "n": "",
            "dcs_mean": mean, "dcs_sd": "" if sd is None else sd, "iou_mean": "", "iou_sd": "",
            "paper_dcs_oudsm": "", "paper_dcs_inbreast": "", "run": "",
        })
    return rows


def table2_markdown(runs: Sequence[RunInfo]) -> str:
    """Table 2 for the runs (paper DCS beside each), then the paper's own Table 2."""
    lines = [
        "| Dataset | Model | Pre-trained weights | n | DCS ± SD | IoU ± SD | Paper DCS (OUDSM) | Paper DCS (INbreast) |",
        "| --- | --- | --- | ---: | --- | --- | --- | --- |",
    ]
    for r in runs:
        s = r.summary or {}
        lines.append(
            f"| {r.dataset} | {r.model} | {r.weights} | {s.get('n', '—')} | "
            f"{_fmt(s.get('dice_mean'), s.get('dice_sd'))} | {_fmt(s.get('iou_mean'), s.get('iou_sd'))} | "
            f"{_fmt(_paper_dcs(r.model, 'OUDSM'))} | {_fmt(_paper_dcs(r.model, 'INbreast'))} |"
        )
    lines += [
        "",
        f"Published ({PAPER_SOURCE}, Table 2; SD shown where the paper reports it, IoU not restated):",
        "",
        "| Dataset | Model | Pre-trained weights | DCS ± SD |",
        "| --- | --- | --- | --- |",
    ]
    for ds, m, w, mean, sd in PAPER_TABLE2:
        lines.append(f"| {ds} | {m} | {w} | {_fmt(mean, sd)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- what produced the runs

#: The image size of the paper's Table 2 (docs/method.md: padded to a square, resized to 512×512).
PAPER_IMAGE_SIZE = 512


def _known(value: Any, unit: str = "") -> str:
    return "not recorded" if value is None else f"{value}{unit}"


def _epochs_text(s: RunSettings) -> str:
    if s.epochs_combo is None and s.epochs_focal_tversky is None:
        return "not recorded"
    return f"{_known(s.epochs_combo)} + {_known(s.epochs_focal_tversky)}"


def _folds_text(s: RunSettings) -> str:
    if s.n_folds is not None and s.folds_trained == s.n_folds:
        return str(s.n_folds)
    return f"{_known(s.n_folds)} ({s.folds_trained} trained)"


def settings_markdown(runs: Sequence[RunInfo]) -> str:
    """The table of what produced each run, for report.md next to Table 2 (and the view's run page)."""
    lines = [
        "| Run | Image size | Epochs (combo + focal Tversky) | Initial weights | Folds | mammoseg | Date |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        s = r.settings
        if s is None:
            continue
        size = "not recorded" if s.image_size is None else f"{s.image_size} px ({s.image_size_from})"
        lines.append(f"| {r.label} | {size} | {_epochs_text(s)} | {r.weights} | {_folds_text(s)} | "
                     f"{_known(s.version)} | {_known(s.date)} |")
    return "\n".join(lines) + "\n"


def paper_differences(run: RunInfo) -> tuple[list[str], list[str]]:
    """How a run differs from the paper's protocol (the `paper` preset at 512 px), as phrases that
    follow "trained", and what it does not record."""
    paper, s = load_config("paper"), run.settings
    if s is None:
        return [], ["its settings"]
    differences: list[str] = []
    unknown: list[str] = []
    if s.image_size is None:
        unknown.append("the image size")
    elif s.image_size != PAPER_IMAGE_SIZE:
        differences.append(f"at {s.image_size} px (the paper: {PAPER_IMAGE_SIZE} px)")
    if s.epochs_combo is None or s.epochs_focal_tversky is None:
        unknown.append("the epochs")
    elif s.epochs_combo < paper.epochs.combo or s.epochs_focal_tversky < paper.epochs.focal_tversky:
        differences.append(f"for {s.epochs_combo} + {s.epochs_focal_tversky} epochs "
                           f"(the paper: {paper.epochs.combo} + {paper.epochs.focal_tversky})")
    if s.n_folds is None and not s.folds_trained:
        unknown.append("the number of folds")
    elif s.n_folds is not None and s.n_folds != paper.n_folds:
        differences.append(f"with {s.n_folds} folds (the paper: {paper.n_folds})")
    elif s.folds_trained < (s.n_folds or paper.n_folds):
        trained = f"only {s.folds_trained} of {s.n_folds}" if s.n_folds else str(s.folds_trained)
        differences.append(f"with {trained} folds (the paper: {paper.n_folds})")
    if run.weights == RANDOM_INIT:
        differences.append("from random initial weights (the paper: ImageNet or GMIC)")
    return differences, unknown


def _and(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def comparability_sentence(run: RunInfo) -> str | None:
    """One sentence when the paper's 512 px numbers are not comparable with the run's (None when they are)."""
    differences, unknown = paper_differences(run)
    if differences:
        return (f"**The paper's 512 px numbers are not comparable with {run.label}**, "
                f"which was trained {_and(differences)}.")
    if unknown:
        return f"Whether the paper's numbers are comparable with {run.label} is unknown: {_and(unknown)} not recorded."
    return None


def provenance_markdown(runs: Sequence[RunInfo]) -> list[str]:
    """report.md's lines after Table 2: the settings table, the version, the comparability sentences."""
    lines = ["### What produced these numbers", "", settings_markdown(runs),
             f"Report written by mammoseg {__version__}.", ""]
    for r in runs:
        sentence = comparability_sentence(r)
        if sentence:
            lines += [sentence, ""]
    return lines


# --------------------------------------------------------------------------- figures


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


# --------------------------------------------------------------------------- FROC


def froc_line(summary: Mapping[str, Any]) -> str | None:
    """report.md's FROC line of one evaluation: the mean sensitivity and each operating point;
    why there is none; or None for an evaluation written before FROC existed."""
    froc = summary.get("froc")
    if not froc:
        return f"FROC: not computed ({summary['froc_skipped']})" if summary.get("froc_skipped") else None
    points = froc["operating_points"]
    return (f"FROC (lesion IoU ≥ {float(froc['lesion_iou_threshold']):g}, {froc['n_ref_lesions']} lesions in "
            f"{froc['n_images']} images): mean sensitivity {float(froc['mean_sensitivity']):.3f}; sensitivity at "
            f"{' / '.join(points)} FP/image: {' / '.join(f'{float(v):.3f}' for v in points.values())}")


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


# --------------------------------------------------------------------------- the report


def postprocessing_line(record: Mapping[str, Any] | None) -> str:
    """report.md's line on the post-processing chosen on the run's out-of-fold (OOF) predictions."""
    if not record:
        return "- post-processing: none chosen (threshold 0.5, every component)"
    try:
        area, keep = int(record["min_area"]), bool(record["keep_most_probable"])
        return (f"- post-processing chosen on {record.get('n_images', '?')} out-of-fold images: threshold "
                f"{float(record['threshold']):g}, minimum component area {area} px, most probable component only: "
                f"{'yes' if keep else 'no'}; OOF mean DCS {_fmt(record['oof_dice_default'])} (threshold 0.5, every "
                f"component) → {_fmt(record['oof_dice_chosen'])}")
    except (KeyError, TypeError, ValueError):
        return "- post-processing: postprocessing.json unreadable"

#: What a report folder holds (what --overwrite replaces).
OUTPUTS = ("report.md", "table2.csv", "table2.md", "figure2_*.png", "learning_curves_*.png", "froc.png")


def write_report(
    runs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    evals: Sequence[str | os.PathLike | None] | None = None,
    data_dir: str | os.PathLike | None = None,
    preds: Sequence[str | os.PathLike | None] | None = None,
    n_cases: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write Table 2, Figure 2 panels, learning curves and report.md; returns report.md's path.

    `evals` / `preds` (one per run, or None) override RUN/eval and RUN/holdout_pred;
    `data_dir` is the prepared folder when the evaluation does not record it. An earlier
    report in `out_dir` is replaced only with `overwrite`.
    """
    if not runs:
        raise ValueError("no runs given")
    for name, seq in (("evaluation", evals), ("prediction", preds)):
        if seq is not None and len(seq) != len(runs):
            raise ValueError(f"{len(seq)} {name} folder(s) given for {len(runs)} run(s); give one per run")
    infos = [
        load_run(r, evals[i] if evals else None, data_dir, preds[i] if preds else None)
        for i, r in enumerate(runs)
    ]
    out = Path(out_dir)
    inputs = [*runs, *(evals or []), *(preds or []), *([data_dir] if data_dir else [])]
    with open_output_folder(out, "report", inputs=[p for p in inputs if p], owned=OUTPUTS, overwrite=overwrite):
        return _write_report_files(infos, out, n_cases)


def _write_report_files(infos: list[RunInfo], out: Path, n_cases: int) -> Path:
    labels = UniqueIds()  # labels become file names
    for info in infos:
        info.label = labels.take(info.label)
    write_csv_atomic(out / "table2.csv", table2_rows(infos), TABLE_COLUMNS)
    table_md = table2_markdown(infos)
    write_text_atomic(out / "table2.md", "# Table 2\n\n" + table_md)

    lines = ["# mammoseg report", "", "## Table 2", "", table_md, "CSV: [table2.csv](table2.csv)", "",
             *provenance_markdown(infos), *froc_section(infos, out)]
    for info in infos:
        lines += [f"## {info.model} — {info.label}", "", f"- run: `{info.run_dir}`", f"- pre-trained weights: {info.weights}"]
        lines.append(postprocessing_line(info.postprocessing))
        s = info.summary or {}
        if s:
            lines.append(f"- evaluation: `{info.eval_dir}` (split {s.get('split', '?')}, grid {s.get('grid', '?')})")
            extra = []
            if "dice_median" in s:
                extra.append(f"median DCS {_fmt(s['dice_median'])}")
            if isinstance(s.get("dice_ci95"), (list, tuple)) and len(s["dice_ci95"]) == 2:
                lo, hi = s["dice_ci95"]
                unit = {"patient": " (patients resampled)", "image": " (images resampled)"}.get(s.get("ci_unit"), "")
                extra.append(f"95% CI of mean DCS [{float(lo):.4f}, {float(hi):.4f}]{unit}")
            if s.get("lesion_sensitivity") is not None:
                extra.append(f"lesion sensitivity {float(s['lesion_sensitivity']):.3f}")
            if s.get("false_positives_per_image") is not None:
                extra.append(f"false positives / image {float(s['false_positives_per_image']):.3f}")
            if extra:
                lines.append("- " + "; ".join(extra))
            froc = froc_line(s)
            if froc:
                lines.append(f"- {froc}")
        fig2 = figure2(info, out / f"figure2_{info.label}.png", n_cases)
        curves = learning_curves(info, out / f"learning_curves_{info.label}.png")
        lines.append("")
        if fig2 is not None:
            lines += [f"{info.figure2_text} ![Figure 2]({fig2.name})", ""]
        if curves is not None:
            lines += [f"Learning curves of every fold: ![learning curves]({curves.name})", ""]
        for note in info.notes:
            lines.append(f"- note: {note}")
            log.warning("%s: %s", info.run_dir, note)
        lines.append("")
    report = out / "report.md"
    write_text_atomic(report, "\n".join(lines).rstrip() + "\n")
    return report
