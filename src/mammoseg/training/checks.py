"""What `train` (and `reproduce`, per model) checks before it writes anything.

Why: a run folder is made only for a run that can start. A crop larger than the prepared
images, a weights file that is missing or does not fit the encoder, too few patients for the
folds: each used to fail after `config.yaml` and `folds.csv` were written, and the corrected
command was then refused as "a different config". Everything here only reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mammoseg.config import ExperimentConfig
from mammoseg.layouts import PreparedLayout, RunLayout
from mammoseg.manifest import load_manifest
from mammoseg.models import check_encoder_weights
from mammoseg.training.data import prepared_image_size
from mammoseg.training.folds import assign_folds, load_or_create_folds


def check_training_input(
    cfg: ExperimentConfig, data_dir: Path, layout: RunLayout, folds: Sequence[int], overwrite: bool = False
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The train split's rows and their folds, once the config fits the data and the weights can be loaded.

    Checked: the prepared folder and its train split, the crop against the prepared size, that
    the patients fill `cfg.n_folds` folds (or the run's own `folds.csv`, unless `overwrite`
    replaces it) and every chosen fold leaves at least 2 training images, and the encoder weights.
    """
    rows = load_manifest(data_dir, split="train")
    if not rows:
        raise ValueError(f"{PreparedLayout(data_dir).manifest}: no images in the train split")
    image_size = prepared_image_size(rows, data_dir)
    if cfg.crop_size > image_size:
        raise ValueError(f"config key 'crop_size': {cfg.crop_size} is larger than the prepared images "
                         f"({image_size} px) of {data_dir}; set crop_size={image_size} or less")
    fold_of = None
    if not overwrite and layout.folds_csv.is_file():
        try:
            fold_of = load_or_create_folds(layout.folds_csv, rows, cfg.n_folds, cfg.seed, write=False)
        except ValueError:
            pass  # a run folder at odds with this config or data: opening it says what differs and what to do
    if fold_of is None:
        fold_of = assign_folds(rows, cfg.n_folds, cfg.seed)
    for k in folds:
        n_train = sum(1 for r in rows if fold_of[r["id"]] != k)
        if n_train < 2:
            raise ValueError(f"{PreparedLayout(data_dir).manifest}: fold {k} leaves {n_train} training image(s); "
                             "batch norm needs at least 2: use fewer folds (n_folds=...) or more data")
    model = cfg.model
    try:
        check_encoder_weights(model.encoder, model.encoder_weights, model.in_channels)
    except (ValueError, OSError) as exc:  # missing, unreadable, not a state dict, keys that do not fit
        raise ValueError(f"config key 'model.encoder_weights': {exc}") from exc
    return rows, fold_of
