"""The paper's Table 2 (Markdown and CSV, published figures alongside), Figure-2-style
panels of the best / median / worst cases, and every fold's learning curves, for one or
more trained and evaluated runs.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by `mammoseg train`")
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
    parser.add_argument("--cases", type=int, default=3, metavar="N", help="cases in Figure 2 (default 3)")


def run(args: argparse.Namespace) -> int:
    from mammoseg.report import write_report

    report = write_report(args.runs, args.out, evals=args.eval, data_dir=args.data, preds=args.pred, n_cases=args.cases)
    print(f"report written: {report}")
    return 0
