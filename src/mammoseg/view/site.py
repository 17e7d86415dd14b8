"""Write the static results site: pages, pictures, and the data table the pages read.

The pages (``assets/``: index.html, case.html, view.css, view.js) are copied as they are;
everything about the cases goes into ``data.js``, one script defining ``window.MAMMOSEG_VIEW``
(a page opened from disk may not `fetch` a JSON file, but it may load a script). The folder
is opened through `mammoseg.folders` (README, "Your data is safe"): never written into unless `view` wrote it,
never over an input (a run's own `view/` excepted), and ``--overwrite`` removes only `OWNED`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from tqdm import tqdm

from mammoseg.evaluation.scoring import summarise_per_image
from mammoseg.folders import open_output_folder
from mammoseg.io import read_csv, write_bytes_atomic, write_text_atomic
from mammoseg.layouts import EvaluationLayout, PredictionLayout, RunLayout
from mammoseg.manifest import UniqueIds, load_manifest
from mammoseg.plots import plot_froc, plot_learning_curves
from mammoseg.report import comparability_sentence, settings_markdown, table2_markdown
from mammoseg.version import __version__
from mammoseg.view.collect import Case, ViewInput, collect_cases, resolve_input
from mammoseg.view.render import (
    DEFAULT_MAX_SIDE,
    LESION_IOU,
    Layers,
    PRED_RGB,
    REF_RGB,
    case_scores,
    load_layers,
    outcome,
    write_case_files,
)

ASSETS = ("index.html", "case.html", "patient.html", "view.css", "view.js")
#: Everything view writes into its folder (and all that --overwrite removes).
OWNED = (*ASSETS, "data.js", "thumbs", "full", "figures")
#: Columns of the data table in data.js, one list per case in this order. `ref_area` / `pred_area`
#: are in data.js's `area_unit` (mm² when every case's pixel spacing is known, else px);
#: `*_px` are pixel counts on the shown grid, `*_mm2` the areas in mm² where the spacing is known.
#: `prob_max` is the highest probability in the map (None without prob/), `n_masses` the predicted masses.
COLUMNS = ("id", "f", "patient", "view", "laterality", "outcome", "dice", "iou", "ref_area", "pred_area",
           "n_ref_lesions", "n_detected", "n_fp", "img", "ref", "prob", "w", "h", "tw", "th",
           "ref_px", "pred_px", "ref_mm2", "pred_mm2", "study_date", "prob_max", "n_masses")
AREA_KEYS = ("ref_px", "pred_px", "ref_mm2", "pred_mm2")


def file_names(ids: Sequence[str]) -> list[str]:
    """A file-system- and URL-safe, unique name per case id (the id rule of every stage)."""
    names = UniqueIds()
    return [names.take(image_id) for image_id in ids]


def markdown_blocks(text: str) -> list[dict[str, Any]]:
    """Markdown tables and lines as {"header", "rows"} / {"text"} blocks the page renders as text."""
    blocks: list[dict[str, Any]] = []
    table: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            table = None
            if line:
                blocks.append({"text": line.lstrip("#").strip()})
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if table is None:
            table = {"header": cells, "rows": []}
            blocks.append(table)
        elif not all(set(c) <= set("-: ") for c in cells):
            table["rows"].append(cells)
    return blocks


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def case_areas(layers: Layers) -> dict[str, Any]:
    """Reference and predicted areas of a case: pixels of the shown grid, and mm² where known."""
    return {"ref_px": int(np.count_nonzero(layers.ref)) if layers.ref is not None else None,
            "pred_px": int(np.count_nonzero(layers.pred)),
            "ref_mm2": layers.area_mm2(layers.ref), "pred_mm2": layers.area_mm2(layers.pred)}


def case_row(case: Case, name: str, scores: dict[str, Any], areas: dict[str, Any], sizes: dict[str, int],
             has: dict[str, bool]) -> list[Any]:
    """One row of the data table, in `COLUMNS` order (`ref_area` / `pred_area` in px until `area_unit` says)."""
    values = {
        "id": case.id, "f": name, "patient": case.patient, "view": case.view, "laterality": case.laterality,
        "study_date": case.study_date,
        "outcome": outcome(scores.get("ref_empty"), scores.get("pred_empty")),
        "dice": _number(scores.get("dice")), "iou": _number(scores.get("iou")),
        "ref_area": areas["ref_px"], "pred_area": areas["pred_px"], "n_ref_lesions": scores.get("n_ref_lesions"),
        "n_detected": scores.get("n_detected"), "n_fp": scores.get("n_false_positives"),
        "img": int(has["img"]), "ref": int(has["ref"]), "prob": int(has["prob"]), **sizes,
        **{k: areas[k] for k in AREA_KEYS},
    }
    return [values[c] for c in COLUMNS]


def area_unit(rows: list[list[Any]]) -> str:
    """"mm²" when every case's pixel spacing is known, and then the area columns hold mm²; else "px".

    One unit for the whole column, so that it sorts; the case page shows mm² wherever known."""
    at = {c: COLUMNS.index(c) for c in ("ref_area", "pred_area", "ref_mm2", "pred_mm2")}
    if not rows or any(r[at["pred_mm2"]] is None for r in rows):
        return "px"
    for r in rows:
        r[at["ref_area"]], r[at["pred_area"]] = r[at["ref_mm2"]], r[at["pred_mm2"]]
    return "mm²"


def write_cases(inp: ViewInput, out: Path, max_side: int | None, progress: bool) -> tuple[list[list[Any]], list[dict]]:
    """Pictures of every case; returns the data-table rows and the rows scored here (no evaluation)."""
    cases = collect_cases(inp)
    rows, computed = [], []
    names = file_names([c.id for c in cases])
    for case, name in tqdm(list(zip(cases, names)), desc="view", unit="img", disable=not progress):
        layers = load_layers(case)
        scores = case_scores(case, layers)
        if "dice" in scores and "dice" not in case.scores:
            computed.append(scores)
        sizes = write_case_files(out, name, layers, max_side)
        has = {"img": layers.image is not None, "ref": layers.ref is not None, "prob": layers.prob is not None}
        rows.append(case_row(case, name, scores, case_areas(layers), sizes, has))
    return rows, computed


def run_extras(inp: ViewInput, out: Path) -> dict[str, Any] | None:
    """For a run: model, weights, the learning curves of every fold, Table 2 and what produced the run."""
    if inp.run is None:
        return None
    info = inp.run
    title = f"{info.model} ({info.weights}) — {info.label}"
    curves = None
    logs = RunLayout(info.run_dir).fold_logs()
    if logs:
        plot_learning_curves(out / "figures" / "learning_curves.png", [(f.dir.name, read_csv(f.log)) for f in logs], title)
        curves = "figures/learning_curves.png"
    settings = settings_markdown([info]) + "\n" + (comparability_sentence(info) or "").replace("**", "")
    return {"model": info.model, "weights": info.weights, "dataset": info.dataset, "run_dir": str(info.run_dir),
            "learning_curves": curves, "table2": markdown_blocks(table2_markdown([info])),
            "settings": markdown_blocks(settings)}


def froc_extras(inp: ViewInput, summary: dict[str, Any] | None, out: Path) -> dict[str, Any] | None:
    """The evaluation's FROC for the index page: summary.json's ``froc`` numbers and the curve of
    froc.csv drawn into ``figures/froc.png``; None when the evaluation has none."""
    froc = (summary or {}).get("froc") if inp.eval_dir is not None else None
    curve = EvaluationLayout(inp.eval_dir).froc if inp.eval_dir is not None else None
    if not froc or curve is None or not curve.is_file():
        return None
    label = inp.run.label if inp.run is not None else inp.eval_dir.name
    plot_froc(out / "figures" / "froc.png", [(label, read_csv(curve), froc["operating_points"])], "lesion-level FROC")
    return {**froc, "figure": "figures/froc.png"}


def _summary(inp: ViewInput, computed: list[dict], n_rows: int) -> tuple[dict[str, Any] | None, str]:
    if inp.summary is not None:
        return inp.summary, "evaluation"
    if computed and len(computed) == n_rows:
        return summarise_per_image(computed, None, "shown", LESION_IOU), "computed by view"
    return None, "none"


def _finite(value: Any) -> Any:
    """The value with NaN/inf replaced by None (JSON has no NaN; summary.json may hold one)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _viridis() -> list[str]:
    """256 "#rrggbb" colours of viridis, the probability map's colour scale (index round(255 · p))."""
    rgb = np.round(colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(int)
    return ["#%02x%02x%02x" % tuple(c) for c in rgb]


PROB_COLOURS = _viridis()


def predict_threshold(pred_dir: Path) -> float:
    """The probability from which predict called a pixel mass (predict.json's `threshold`, else its default 0.5)."""
    try:
        value = json.loads(PredictionLayout(pred_dir).summary.read_text(encoding="utf-8")).get("threshold", 0.5)
        return float(value) if 0.0 <= float(value) <= 1.0 else 0.5
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.5


def write_data_js(out: Path, data: dict[str, Any]) -> None:
    text = json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    write_text_atomic(out / "data.js", f"window.MAMMOSEG_VIEW = {text};\n")


def write_assets(out: Path) -> None:
    folder = resources.files("mammoseg.view") / "assets"
    for name in ASSETS:
        write_bytes_atomic(out / name, (folder / name).read_bytes())


def write_view(
    source: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    max_side: int | None = DEFAULT_MAX_SIDE,
    progress: bool = True,
) -> Path:
    """Write the results site of a prediction, evaluation or run folder; returns its index.html.

    `out_dir` defaults to ``<source>/view``; `data_dir` is the prepared folder when the
    input does not record it; `max_side` None keeps every image at full resolution. See docs/view.md.
    """
    if max_side is not None and max_side < 64:
        raise ValueError(f"--max-side {max_side}: give at least 64 pixels")
    inp = resolve_input(source, data_dir)
    if inp.data_dir is not None:
        load_manifest(inp.data_dir)  # a folder that is not a prepared one is refused before the site's folder is made
    out = Path(out_dir) if out_dir is not None else inp.root / "view"
    with open_output_folder(out, "view", inputs=[f for f in inp.folders() if f != inp.root], hosts=[inp.root],
                            owned=OWNED, overwrite=overwrite):
        return _write_site(inp, out, max_side, progress)


def _write_site(inp: ViewInput, out: Path, max_side: int | None, progress: bool) -> Path:
    rows, computed = write_cases(inp, out, max_side, progress)
    summary, metrics_from = _summary(inp, computed, len(rows))
    unit = area_unit(rows)
    write_data_js(out, {
        "format": 1, "version": __version__, "kind": inp.kind, "source": str(inp.root),
        "folders": {k: str(v) if v is not None else None for k, v in
                    (("pred", inp.pred_dir), ("eval", inp.eval_dir), ("data", inp.data_dir), ("ref", inp.ref_dir))},
        "metrics_from": metrics_from, "summary": summary, "run": run_extras(inp, out), "max_side": max_side,
        "froc": froc_extras(inp, summary if metrics_from == "evaluation" else None, out),
        "colours": {"reference": "#%02X%02X%02X" % REF_RGB, "prediction": "#%02X%02X%02X" % PRED_RGB},
        "area_unit": unit, "columns": list(COLUMNS), "rows": rows, "threshold": predict_threshold(inp.pred_dir),
        "prob_colours": PROB_COLOURS,
    })
    write_assets(out)
    return out / "index.html"
