"""The paper's Table 2 (Markdown and CSV, published figures alongside), Figure-2-style
panels of the best / median / worst cases, and every fold's learning curves, for one or
more trained and evaluated runs.

  mammoseg report --run RUN [--run RUN2 ...] --out DIR   (or: mammoseg report RUN [RUN2 ...] --out DIR)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mammoseg.commands.options import add_overwrite_argument, non_negative_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run folder(s) written by `mammoseg train` (or --run)")
    parser.add_argument("--run", dest="run_flags", action="append", default=[], metavar="RUN",
                        help="a run folder, as the other commands name it (repeatable; after the positional ones)")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder to write")
    parser.add_argument(
        "--eval", nargs="+", default=None, metavar="EVAL",
        help="evaluation folder per run, in the order of the runs (default RUN/eval)",
    )
    parser.add_argument(
        "--pred", nargs="+", default=None, metavar="PRED",
        help="prediction folder per run, for Figure 2 (default RUN/holdout_pred)",
    )
    parser.add_argument("--data", default=None, metavar="DIR", help="prepared folder, for Figure 2's images")
    parser.add_argument("--cases", type=non_negative_int, default=3, metavar="N", help="cases in Figure 2 (default 3)")
    add_overwrite_argument(parser, "an earlier report in DIR")


def check_folders(args: argparse.Namespace) -> list[str]:
    """The runs, once every folder named on the command line exists (a typo is refused before the report
    folder is made, not silently left out of the report)."""
    runs = [*args.runs, *args.run_flags]
    if not runs:
        raise ValueError("give at least one run folder (--run RUN)")
    named = [("--run", r) for r in runs] + [("--eval", e) for e in args.eval or []]
    named += [("--pred", p) for p in args.pred or []] + ([("--data", args.data)] if args.data else [])
    for flag, folder in named:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder}: no such folder ({flag})")
    return runs


def run(args: argparse.Namespace) -> int:
    from mammoseg.report import write_report

    runs = check_folders(args)
    report = write_report(runs, args.out, evals=args.eval, data_dir=args.data, preds=args.pred, n_cases=args.cases,
                          overwrite=args.overwrite)
    print(f"report written: {report}")
    return 0
