"""Train the patient-grouped cross-validation models (the paper's protocol by default).

  mammoseg train --config paper|demo|FILE.yaml --data PREPARED --out RUN [--folds 0,1]
                 [--resume] [--device auto|cpu|cuda|cuda:N] [--overwrite] [key=value ...]
  mammoseg train --print-config [--config demo] [key=value ...]   (the resolved config as YAML)

Overrides use dotted keys, e.g. `epochs.focal_tversky=10 batch_size=8 model.encoder=resnet22
model.decoder=fpn`; every key, its type and default: docs/config.md. The config is checked
against the data (crop vs prepared size, folds vs patients, weights files) before anything is
written. Once every fold is trained, the post-processing (threshold, minimum component area, most
probable component only) is chosen on the folds' out-of-fold predictions and saved as
RUN/postprocessing.json (docs/training.md, "Post-processing"). Several GPUs or nodes:
`torchrun --nproc_per_node=N -m mammoseg train ...`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mammoseg.commands.options import add_device_argument, add_overwrite_argument, add_progress_argument

if TYPE_CHECKING:  # torch is imported when a command runs, not to parse its flags
    from mammoseg.config import ExperimentConfig
    from mammoseg.training.fold import FoldResult

log = logging.getLogger("mammoseg.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="paper", metavar="NAME|FILE",
                        help="preset (paper, demo) or YAML file; default: paper")
    parser.add_argument("--data", metavar="DIR",
                        help="prepared folder (mammoseg prepare); required unless --print-config")
    parser.add_argument("--out", metavar="RUN", help="run folder to write; required unless --print-config")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (preset or file, then overrides) as YAML and exit")
    parser.add_argument("--folds", default=None, metavar="0,1,..", help="train only these folds (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="shorthand for the override seed=S")
    parser.add_argument("--resume", action="store_true", help="continue unfinished folds from their last.pt")
    add_device_argument(parser)
    add_overwrite_argument(parser, "a run with a different config in RUN (its models and predictions)")
    add_progress_argument(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (docs/config.md)")


def run(args: argparse.Namespace) -> int:
    from mammoseg.config import load_config

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(args.config, overrides)
    if args.print_config:
        return _print_config(cfg)
    if not args.data or not args.out:
        raise ValueError("--data and --out are required (unless --print-config)")
    return _train(cfg, args)


def _print_config(cfg: ExperimentConfig) -> int:
    """The resolved config on stdout (a file `--config` reads back as the same config); a schedule
    that cannot work as meant is said on stderr."""
    from mammoseg.training.schedule import unused_milestones

    unused = unused_milestones(cfg)
    if unused:
        log.warning("%s", unused)
    sys.stdout.write(cfg.to_yaml())
    return 0


def _train(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from mammoseg.distributed import env_dist_info, shutdown_distributed
    from mammoseg.inference.oof import describe_record
    from mammoseg.inference.postprocess import read_record
    from mammoseg.inference.run_identity import run_id
    from mammoseg.layouts import RunLayout
    from mammoseg.training import run_cross_validation
    from mammoseg.training.cross_validation import select_folds

    folds = select_folds(args.folds, cfg.n_folds)
    try:
        results = run_cross_validation(cfg, args.data, args.out, folds=folds, resume=args.resume,
                                       device=args.device, overwrite=args.overwrite, progress=not args.no_progress)
    finally:
        shutdown_distributed()
    if env_dist_info().is_main:
        print(summary_line(results, args.out))
        chosen = read_record(RunLayout(args.out))
        if chosen is not None and chosen.get("run_id") == run_id(args.out):  # chosen for these very models
            print(describe_record(chosen))
        print(f"next: mammoseg predict --run {args.out} --input {args.data} --split holdout "
              f"--out {RunLayout(args.out).holdout_pred}")
    return 0


def summary_line(results: Sequence[FoldResult], run_dir: str) -> str:
    """One line: how many folds were trained (and already done), each fold's best validation Dice, where."""
    skipped = sum(r.skipped for r in results)
    done = f"trained {len(results) - skipped} fold(s)" + (f", {skipped} already done" if skipped else "")
    dice = ", ".join(f"fold {r.fold} {r.best_val_dice:.4f} (epoch {r.best_epoch})" for r in results)
    return f"{done} into {run_dir}; best val Dice: {dice}"
