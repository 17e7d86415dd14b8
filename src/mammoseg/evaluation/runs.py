"""A run folder as the report and the results site read it: model, weights, evaluation, data.

Why apart from rendering: `report` (Table 2, Figure 2) and `view` (the results site) both need
the same facts about a run — which model, which initial weights, where its evaluation, holdout
predictions and prepared data are — and must agree on them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mammoseg.layouts import EvaluationLayout, RunLayout
from mammoseg.models import display_name

RANDOM_INIT = "none (random init)"


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
    return info
