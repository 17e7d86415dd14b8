"""Train the patient-grouped cross-validation models (the paper's protocol by default).

  mammoseg train --config paper|demo|FILE.yaml --data PREPARED --out RUN [--folds 0,1]
                 [--resume] [--device cpu|cuda] [--overwrite] [key=value ...]

Overrides use dotted keys, e.g. `epochs.focal_tversky=10 batch_size=8 model.encoder=resnet22
model.decoder=fpn`. Several GPUs or nodes: `torchrun --nproc_per_node=N -m mammoseg train ...`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="paper", metavar="NAME|FILE",
                        help="preset (paper, demo) or YAML file; default: paper")
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared folder (mammoseg prepare)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    parser.add_argument("--folds", default=None, metavar="0,1,..", help="train only these folds (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="shorthand for the override seed=S")
    parser.add_argument("--resume", action="store_true", help="continue unfinished folds from their last.pt")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"],
                        help="default: cuda if available, else cpu")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run folder that holds a run with a different config")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    from mammoseg.config import load_config
    from mammoseg.distributed import shutdown_distributed
    from mammoseg.training import run_cross_validation
    from mammoseg.training.cross_validation import select_folds

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(args.config, overrides)
    folds = select_folds(args.folds, cfg.n_folds)
    try:
        run_cross_validation(cfg, args.data, args.out, folds=folds, resume=args.resume,
                             device=args.device, overwrite=args.overwrite, progress=not args.no_progress)
    finally:
        shutdown_distributed()
    return 0
