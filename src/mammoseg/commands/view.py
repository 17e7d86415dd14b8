"""A static results site for a prediction, evaluation or run folder: every image with an
overlay thumbnail, Dice, IoU, areas and outcome (TP/FN/FP/TN); sort and filter (also from
the URL, e.g. index.html?sort=dice&order=asc&outcome=FN); one case at full size with the
image, reference, prediction and probability map toggled by keys. Opens from disk, offline.

  mammoseg view --run RUN   (or: mammoseg view PRED_OR_EVAL_OR_RUN)
"""

from __future__ import annotations

import argparse

from mammoseg.commands.options import add_overwrite_argument, add_progress_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", default=None, metavar="PRED_OR_EVAL_OR_RUN",
                        help="prediction folder (predict), evaluation folder (evaluate) or run folder (train/reproduce)")
    parser.add_argument("--run", default=None, metavar="RUN",
                        help="a run folder, as the other commands name it (instead of the positional folder)")
    parser.add_argument("--out", default=None, metavar="DIR", help="folder for the site (default SOURCE/view)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="prepared folder with the images and reference masks, when SOURCE does not record it")
    parser.add_argument("--max-side", type=int, default=2048, metavar="PX",
                        help="shrink full-size layers larger than this on their long side (default 2048)")
    parser.add_argument("--full-resolution", action="store_true",
                        help="keep every image at its full resolution (overrides --max-side; a larger site)")
    add_overwrite_argument(parser, "a view written earlier in DIR")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from mammoseg.view import write_view

    if (args.source is None) == (args.run is None):
        raise ValueError("give one folder to view: --run RUN, or a prediction, evaluation or run folder")
    max_side = None if args.full_resolution else args.max_side
    index = write_view(args.source or args.run, args.out, data_dir=args.data, overwrite=args.overwrite,
                       max_side=max_side, progress=not args.no_progress)
    print(f"view: {index}")
    return 0
