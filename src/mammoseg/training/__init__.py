"""Training: the paper's two-phase schedule over patient-grouped cross-validation folds.

- `cross_validation` — the fold driver: run-folder policy, fold selection, one fold after another;
- `fold` — one fold, read like torchvision's reference `main`: build data, build model,
  restore, then per epoch `set_epoch → train_one_epoch → evaluate → save`;
- `engine` — one epoch of training and of validation, precision, the optimisation step;
- `data` — datasets, samplers, loaders and the normalisation statistics of a fold;
- `model` — building and wrapping (SyncBatchNorm, channels_last, DDP, compile) the network;
- `state` — what a fold keeps between epochs, its checkpoints, log and curve;
- `folds` — the patient-grouped cross-validation folds of the training split (`folds.csv`);
- `dataset` — the prepared images as a dataset, with seeded, shardable samplers;
- `augment` — the paper's Table 1 augmentations on the host; `device_augment` the rows that run
  on the training device (median blur, cutout), with `median_blur` its exact selection network;
- `losses`, `schedule` — the combo and focal Tversky losses, and the two-phase schedule.

See docs/training.md for the protocol and its reproducibility guarantees.
"""

from mammoseg.training.cross_validation import run_cross_validation

__all__ = ["run_cross_validation"]
