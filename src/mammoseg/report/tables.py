"""Table 2 of the report beside the published figures, and what produced each run (comparability)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mammoseg.config import load_config
from mammoseg.evaluation.runs import RANDOM_INIT, RunInfo, RunSettings
from mammoseg.version import __version__

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


def format_dcs(mean: Any, sd: Any = None) -> str:
    """'0.7677 ± 0.2134' (4 decimals; the SD when known), '—' for a missing mean."""
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
            f"{format_dcs(s.get('dice_mean'), s.get('dice_sd'))} | {format_dcs(s.get('iou_mean'), s.get('iou_sd'))} | "
            f"{format_dcs(_paper_dcs(r.model, 'OUDSM'))} | {format_dcs(_paper_dcs(r.model, 'INbreast'))} |"
        )
    lines += [
        "",
        f"Published ({PAPER_SOURCE}, Table 2; SD shown where the paper reports it, IoU not restated):",
        "",
        "| Dataset | Model | Pre-trained weights | DCS ± SD |",
        "| --- | --- | --- | --- |",
    ]
    for ds, m, w, mean, sd in PAPER_TABLE2:
        lines.append(f"| {ds} | {m} | {w} | {format_dcs(mean, sd)} |")
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
