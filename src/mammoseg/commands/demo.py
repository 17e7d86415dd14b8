"""The whole pipeline on synthetic phantoms, end to end, with no data and no network:
synthesise → prepare (256 px) → train (`demo` preset) → predict the holdout → evaluate →
report. Prints each stage, where the report is and the holdout mean Dice. Rerunning the
same command resumes.
"""

from __future__ import annotations

import argparse

from mammoseg.commands.options import add_device_argument, add_overwrite_argument, add_progress_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for every stage's output")
    parser.add_argument("--patients", type=int, default=None, metavar="N",
                        help="phantom patients to synthesise (default: the demo's own number, 40)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed for phantoms, split and training")
    add_device_argument(parser)
    add_overwrite_argument(parser, "the demo's earlier outputs in --out (start again)")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from mammoseg.demo import run_demo

    patients = {} if args.patients is None else {"patients": args.patients}
    run_demo(args.out, **patients, seed=args.seed, overwrite=args.overwrite, device=args.device,
             progress=not args.no_progress)
    return 0
