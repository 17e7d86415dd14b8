"""A run folder as the report and the results site read it: model, weights, evaluation, data,
and what produced it (`RunSettings`: image size, epochs, folds, mammoseg version, date).

Why apart from rendering: `report` (Table 2, Figure 2) and `view` (the results site) both need
the same facts about a run — which model, which initial weights, where its evaluation, holdout
predictions and prepared data are — and must agree on them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from mammoseg.folders import MARKER
from mammoseg.io import read_csv
from mammoseg.layouts import EvaluationLayout, PredictionLayout, PreparedLayout, RunLayout
from mammoseg.models import display_name

RANDOM_INIT = "none (random init)"


@dataclass(frozen=True)
class RunSettings:
    """What produced a run, as its folder records it; None where it does not.

    `image_size` is the prepared size the models were trained at (config.yaml's `image_size`,
    else the holdout prediction's predict.json, which has it from the checkpoints, else the
    prepared folder's manifest; `image_size_from` names which). `folds_trained` counts the
    fold folders with a log; `version` is the mammoseg that wrote the run folder (its marker);
    `date` the newest fold log's modification time, else config.yaml's (UTC).
    """

    image_size: int | None
    image_size_from: str
    epochs_combo: int | None
    epochs_focal_tversky: int | None
    n_folds: int | None
    folds_trained: int
    version: str | None
    date: str | None


@dataclass
class RunInfo:
    """What the report needs to know about one run; missing parts are None."""

    run_dir: Path
    label: str
    model: str
    weights: str
    dataset: str
    summary: dict[str, Any] | None = None
    eval_dir: Path | None = None
    pred_dir: Path | None = None
    data_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    figure2_text: str = "Best / median / worst holdout cases by Dice."
    settings: RunSettings | None = None
    #: postprocessing.json (the rule chosen on the out-of-fold predictions), when the run has one.
    postprocessing: dict[str, Any] | None = None




def weights_label(encoder_weights: Any) -> str:
    """How the table names a config's `model.encoder_weights`."""
    if encoder_weights in (None, "", "none", "None", "null"):
        return RANDOM_INIT
    text = str(encoder_weights)
    if text.lower() == "imagenet":
        return "ImageNet"
    if text.lower().startswith("gmic") or "sample_model" in Path(text).name:
        return "GMIC"
    return f"custom ({Path(text.split(':', 1)[-1]).name})"


def read_run_config(layout: RunLayout) -> dict[str, Any]:
    path = layout.config
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.yaml; is {layout.root} a run folder made by `mammoseg train`?")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def _run_info(layout: RunLayout) -> dict[str, Any]:
    """Facts reproduce/demo record beside config.yaml (data folder, dataset and weights names)."""
    try:
        data = json.loads(layout.run_info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_dir(*candidates: Any) -> Path | None:
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def _count(value: Any, minimum: int = 1) -> int | None:
    """A whole number ≥ `minimum` from a config or JSON value (an int, or a string of digits); else None."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    return None


def _read_dict(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _image_size(config: dict[str, Any], pred_dir: Path | None, data_dir: Path | None) -> tuple[int | None, str]:
    """The prepared size the run's models were trained at, and the file that says so."""
    if _count(config.get("image_size")):
        return _count(config.get("image_size")), "config.yaml"
    summary = PredictionLayout(pred_dir).summary if pred_dir else None
    predicted = _count(_read_dict(summary).get("image_size")) if summary else None
    if predicted:
        return predicted, summary.name
    manifest = PreparedLayout(data_dir).manifest if data_dir is not None else None
    if manifest is not None and manifest.is_file():
        sizes = {_count(r.get("size")) for r in read_csv(manifest)}
        if len(sizes) == 1 and None not in sizes:
            return sizes.pop(), manifest.name
    return None, ""


def _run_date(layout: RunLayout) -> str | None:
    """When the run was last trained: its newest fold log, else config.yaml (UTC)."""
    times = [f.log.stat().st_mtime for f in layout.fold_logs()]
    if not times and layout.config.is_file():
        times = [layout.config.stat().st_mtime]
    if not times:
        return None
    return datetime.fromtimestamp(max(times), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_settings(layout: RunLayout, config: dict[str, Any], pred_dir: Path | None = None,
                 data_dir: Path | None = None) -> RunSettings:
    """What produced the run in `layout` (config.yaml's mapping `config`): see `RunSettings`."""
    epochs = config.get("epochs") if isinstance(config.get("epochs"), dict) else {}
    size, size_from = _image_size(config, pred_dir, data_dir)
    version = _read_dict(layout.root / MARKER).get("mammoseg")
    return RunSettings(
        image_size=size, image_size_from=size_from,
        epochs_combo=_count(epochs.get("combo"), 0), epochs_focal_tversky=_count(epochs.get("focal_tversky"), 0),
        n_folds=_count(config.get("n_folds")), folds_trained=len(layout.fold_logs()),
        version=str(version) if version else None, date=_run_date(layout),
    )


def load_run(
    run_dir: str | os.PathLike,
    eval_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    pred_dir: str | os.PathLike | None = None,
) -> RunInfo:
    """Collect a run's model, weights, evaluation summary and the folders Figure 2 needs."""
    run = Path(run_dir)
    layout = RunLayout(run)
    config = read_run_config(layout)
    model_cfg = config.get("model") or {}
    meta = _run_info(layout)
    info = RunInfo(
        run_dir=run,
        label=run.name or str(run),
        model=display_name(str(model_cfg.get("encoder", "?")), str(model_cfg.get("decoder", "?"))),
        # reproduce/demo record the weights' name (a local ImageNet file is still "ImageNet").
        weights=str(meta.get("weights_label") or weights_label(model_cfg.get("encoder_weights"))),
        dataset="",
    )
    edir = Path(eval_dir) if eval_dir is not None else layout.eval
    summary_path = EvaluationLayout(edir).summary
    if summary_path.is_file():
        try:
            info.summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{summary_path}: not valid JSON: {exc}") from exc
        info.eval_dir = edir
    else:
        info.notes.append(f"no evaluation found at {summary_path}")
    summary = info.summary or {}
    info.data_dir = _first_dir(
        data_dir, summary.get("data_dir"), meta.get("data_dir"), config.get("data_dir")
    )
    info.pred_dir = _first_dir(pred_dir, summary.get("pred_dir"), layout.holdout_pred)
    dataset = summary.get("dataset") or meta.get("dataset")
    if not dataset and info.data_dir is not None:
        dataset = info.data_dir.resolve().name
    info.dataset = str(dataset or "?")
    info.settings = run_settings(layout, config, info.pred_dir, info.data_dir)
    info.postprocessing = _read_dict(layout.postprocessing) or None
    return info
