"""report.md: Table 2, what produced each run, the FROC section and one section per run; `write_report`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mammoseg.evaluation.runs import RunInfo, load_run
from mammoseg.folders import open_output_folder
from mammoseg.io import write_csv_atomic, write_text_atomic
from mammoseg.manifest import UniqueIds
from mammoseg.report.figures import figure2, froc_section, learning_curves
from mammoseg.report.tables import TABLE_COLUMNS, format_dcs, provenance_markdown, table2_markdown, table2_rows

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- the report


def postprocessing_line(record: Mapping[str, Any] | None) -> str:
    """report.md's line on the post-processing chosen on the run's out-of-fold (OOF) predictions."""
    if not record:
        return "- post-processing: none chosen (threshold 0.5, every component)"
    try:
        area, keep = int(record["min_area"]), bool(record["keep_most_probable"])
        return (f"- post-processing chosen on {record.get('n_images', '?')} out-of-fold images: threshold "
                f"{float(record['threshold']):g}, minimum component area {area} px, most probable component only: "
                f"{'yes' if keep else 'no'}; OOF mean DCS {format_dcs(record['oof_dice_default'])} (threshold 0.5, every "
                f"component) → {format_dcs(record['oof_dice_chosen'])}")
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
                extra.append(f"median DCS {format_dcs(s['dice_median'])}")
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
