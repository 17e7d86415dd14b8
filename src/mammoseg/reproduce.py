"""The paper's whole experiment in one call: four models × k folds → holdout ensemble → Table 2.

For each model (ResNet34-UNet, ResNet22-UNet, ResNet34-FPN, ResNet22-FPN) on one prepared
folder: patient-grouped cross-validation (`mammoseg.training.run_cross_validation`, which also
chooses the post-processing on the out-of-fold predictions), fold-ensemble prediction of the
holdout split with that post-processing, evaluation, then one report over all four.

Pretrained weights follow the paper: both ResNet34 models start from ImageNet weights,
both ResNet22 models from GMIC's global network (docs/method.md). Without a
weights option that encoder trains from random initialisation, which is said on the
console and marked "none (random init)" in the table.

Layout: OUT/<model>/ is the run (config.yaml, folds.csv, fold*/), OUT/<model>/holdout_pred,
OUT/<model>/eval, OUT/<model>/view/ (the results site), OUT/report/. Every stage resumes: training skips finished folds, and
prediction/evaluation are skipped when their outputs are complete and newer than their inputs (the
checkpoints and postprocessing.json; the post-processing is chosen anew only when a fold changed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammoseg.config import load_config
from mammoseg.evaluation.scoring import Scoring, evaluate_predictions
from mammoseg.folders import open_output_folder
from mammoseg.inference.journal import prediction_complete
from mammoseg.inference.oof import describe_record
from mammoseg.inference.postprocess import read_record
from mammoseg.inference.predict import PredictOptions, predict
from mammoseg.io import write_text_atomic
from mammoseg.layouts import EvaluationLayout, PredictionLayout, PreparedLayout, RunLayout
from mammoseg.manifest import load_manifest
from mammoseg.report import write_report
from mammoseg.training import run_cross_validation
from mammoseg.training.checks import check_training_input
from mammoseg.view import write_view

log = logging.getLogger(__name__)

#: (run folder name, encoder, decoder) of the paper's four models, in Table 2's order.
PAPER_MODELS: tuple[tuple[str, str, str], ...] = (
    ("resnet34-unet", "resnet34", "unet"),
    ("resnet22-unet", "resnet22", "unet"),
    ("resnet34-fpn", "resnet34", "fpn"),
    ("resnet22-fpn", "resnet22", "fpn"),
)
#: Config keys reproduce sets itself (from --models and the weights options).
_MODEL_KEYS = ("model.encoder", "model.decoder", "model.encoder_weights")


@dataclass
class StageResult:
    """What happened to one model: its folders, and the holdout summary once evaluated."""

    name: str
    run_dir: Path
    pred_dir: Path
    eval_dir: Path
    summary: dict[str, Any] | None = None


def select_models(names: Sequence[str] | None) -> list[tuple[str, str, str]]:
    """The paper's models named in `names` (e.g. `resnet22-unet`, `ResNet34-FPN`); all by default."""
    if not names:
        return list(PAPER_MODELS)
    known = {n: (n, e, d) for n, e, d in PAPER_MODELS}
    chosen = []
    for raw in names:
        for part in str(raw).split(","):
            key = part.strip().lower().replace("_", "-")
            if not key:
                continue
            if key not in known:
                raise ValueError(f"unknown model {part!r}; choose from {', '.join(known)}")
            if known[key] not in chosen:
                chosen.append(known[key])
    return chosen


def encoder_weights_for(
    encoder: str, imagenet_weights: str | None, gmic_weights: str | None
) -> tuple[str | None, str]:
    """(value of `model.encoder_weights`, label for the table) for an encoder."""
    if encoder == "resnet34" and imagenet_weights:
        text = str(imagenet_weights)
        if text != "imagenet" and not Path(text).expanduser().is_file():
            raise FileNotFoundError(f"{text}: --imagenet-weights file not found")
        return text, "ImageNet"
    if encoder == "resnet22" and gmic_weights:
        path = Path(str(gmic_weights).removeprefix("gmic:")).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: --gmic-weights file not found")
        return f"gmic:{path}", "GMIC"
    return None, "none (random init)"


def model_config(base: Any, encoder: str, decoder: str, weights: str | None) -> Any:
    """`base` (an ExperimentConfig) with the model's encoder, decoder and weights set."""
    model = dataclasses.replace(base.model, encoder=encoder, decoder=decoder, encoder_weights=weights)
    return dataclasses.replace(base, model=model)


def _newer(path: Path, than: Sequence[Path]) -> bool:
    return path.is_file() and all(path.stat().st_mtime >= p.stat().st_mtime for p in than if p.exists())


@dataclass(frozen=True)
class StageOptions:
    """How every stage of a model's experiment runs: on which device, with progress bars or not, and
    where its one-line messages go (demo and reproduce print them; tests collect them)."""

    device: str | None = None
    progress: bool = True
    echo: Callable[[str], Any] = print
    #: reproduce: start again, removing what an earlier reproduce wrote into its folder (--overwrite).
    overwrite: bool = False


def predict_and_evaluate(
    run_dir: Path, data_dir: Path, pred_dir: Path, eval_dir: Path, stages: StageOptions = StageOptions()
) -> dict[str, Any]:
    """Holdout prediction with the fold ensemble, then evaluation; each skipped when up to date."""
    echo, progress = stages.echo, stages.progress
    # The chosen post-processing decides the masks too: a prediction older than it is redone.
    checkpoints = [*RunLayout(run_dir).best_checkpoints(), RunLayout(run_dir).postprocessing]
    predictions, evaluation = PredictionLayout(pred_dir).predictions, EvaluationLayout(eval_dir)
    if prediction_complete(pred_dir) and _newer(predictions, checkpoints):
        echo(f"  predict: {pred_dir} is up to date; skipped")
    else:
        echo(f"  predict: holdout of {data_dir} -> {pred_dir}")
        predict(run_dir, [data_dir], pred_dir,  # probabilities saved: evaluate's FROC needs them
                PredictOptions(split="holdout", save_prob=True, device=stages.device, progress=progress), overwrite=True)
    summary_path = evaluation.summary
    if _newer(summary_path, [predictions]) and evaluation.per_image.is_file():
        echo(f"  evaluate: {eval_dir} is up to date; skipped")
        return json.loads(summary_path.read_text(encoding="utf-8"))
    echo(f"  evaluate: {pred_dir} against {data_dir} -> {eval_dir}")
    return evaluate_predictions(pred_dir, data_dir, eval_dir, Scoring(split="holdout"), overwrite=True,
                                progress=progress)


def write_run_info(run_dir: Path, data_dir: Path, weights_label: str, name: str, dataset: str | None = None) -> None:
    """Record the data folder, the dataset's and the weights' names beside config.yaml, for `report`."""
    info = {"model": name, "data_dir": str(data_dir.resolve()), "dataset": dataset or data_dir.resolve().name,
            "weights_label": weights_label}
    write_text_atomic(RunLayout(run_dir).run_info, json.dumps(info, indent=2) + "\n")


def run_model(
    cfg: Any,
    name: str,
    data_dir: Path,
    run_dir: Path,
    weights_label: str,
    dataset: str | None = None,
    stages: StageOptions = StageOptions(),
) -> StageResult:
    """Train (resuming), predict the holdout and evaluate one model; the unit reproduce and demo share."""
    echo = stages.echo
    echo(f"[{name}] train {cfg.n_folds} folds ({cfg.model.encoder}-{cfg.model.decoder}, weights: {weights_label}) -> {run_dir}")
    run_cross_validation(cfg, data_dir, run_dir, resume=True, device=stages.device, progress=stages.progress)
    write_run_info(run_dir, data_dir, weights_label, name, dataset)
    layout = RunLayout(run_dir)
    chosen = read_record(layout)  # chosen on the out-of-fold predictions by run_cross_validation
    if chosen is not None:
        echo(f"[{name}] {describe_record(chosen)}")
    result = StageResult(name, run_dir, layout.holdout_pred, layout.eval)
    result.summary = predict_and_evaluate(run_dir, data_dir, result.pred_dir, result.eval_dir, stages)
    dice = result.summary.get("dice_mean")
    if dice is not None:
        echo(f"[{name}] holdout DCS {float(dice):.4f} ± {float(result.summary.get('dice_sd') or 0):.4f} "
             f"(n={result.summary.get('n')})")
    return result


def reproduce(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | os.PathLike = "paper",
    imagenet_weights: str | None = None,
    gmic_weights: str | None = None,
    models: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    stages: StageOptions = StageOptions(),
) -> Path:
    """Run the paper's experiment on a prepared folder; returns the path of report.md."""
    echo = stages.echo
    data, out = Path(data_dir), Path(out_dir)
    clash = [o for o in overrides if o.split("=", 1)[0].strip() in _MODEL_KEYS]
    if clash:
        raise ValueError(
            f"override(s) {', '.join(clash)}: reproduce sets the model itself; use --models, "
            "--imagenet-weights and --gmic-weights"
        )
    rows = load_manifest(data)  # checks the folder and its split before hours of training
    if not any(r["split"] == "holdout" for r in rows):
        raise ValueError(f"{PreparedLayout(data).manifest}: no holdout images to evaluate on")
    base = load_config(config, overrides)
    chosen = select_models(models)
    encoders = {e for _, e, _ in chosen}
    if "resnet34" in encoders and not imagenet_weights:
        echo("note: no --imagenet-weights given: the ResNet34 models train from random initialisation "
             "(marked 'none (random init)' in the table)")
    if "resnet22" in encoders and not gmic_weights:
        echo("note: no --gmic-weights given: the ResNet22 models train from random initialisation "
             "(marked 'none (random init)' in the table)")
    plans = []
    for name, encoder, decoder in chosen:  # check every model against the data before anything is written
        weights, label = encoder_weights_for(encoder, imagenet_weights, gmic_weights)
        cfg = model_config(base, encoder, decoder, weights)
        check_training_input(cfg, data, RunLayout(out / name), range(cfg.n_folds), overwrite=stages.overwrite)
        plans.append((name, cfg, label))

    owned = [name for name, _, _ in PAPER_MODELS] + ["report"]
    with open_output_folder(out, "reproduce", inputs=[data], owned=owned, overwrite=stages.overwrite, resume=True):
        results = [
            run_model(cfg, name, data, out / name, label, stages=stages)
            for name, cfg, label in plans
        ]
        echo(f"report -> {out / 'report'}")
        report = write_report([r.run_dir for r in results], out / "report", data_dir=data, overwrite=True)
        for r in results:  # each model's results site, inside its run folder
            view = write_view(r.run_dir, RunLayout(r.run_dir).view, data_dir=data, overwrite=True,
                              progress=stages.progress)
            echo(f"view: {view}")
        return report
