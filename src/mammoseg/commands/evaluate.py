"""Per-image Dice and IoU, and lesion-level detection, of predicted masks.

Against a prepared folder (--data): compares <PRED>/masks/<id>.png with the reference masks
of one split. Against a folder of masks (--ref): pairs PNG files of PRED (or PRED/masks) and
REF by file stem; names on one side only and size mismatches are listed in <EVAL>/errors.csv
and fail the evaluation. Writes <EVAL>/per_image.csv and <EVAL>/summary.json. Both-empty
images score 1, images where exactly one mask is empty score 0; the summary says how many
of each there were. With --data and a probability map for every image (predict --save-prob)
it also writes the lesion-level FROC: <EVAL>/froc.csv and summary.json's "froc".
"""

from __future__ import annotations

import argparse

from mammoseg.commands.options import add_overwrite_argument, add_progress_argument
from mammoseg.layouts import EvaluationLayout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="PRED",
                        help="prediction folder written by `mammoseg predict`, or (with --ref) a folder of PNG masks")
    reference = parser.add_mutually_exclusive_group(required=True)
    reference.add_argument("--data", metavar="DIR", help="prepared folder with the reference masks")
    reference.add_argument("--ref", metavar="DIR",
                           help="folder of reference PNG masks (non-zero = mass), matched to PRED by file stem")
    parser.add_argument("--split", choices=("holdout", "train"), default=None,
                        help="which split of the prepared folder to score (default holdout; --data only)")
    parser.add_argument("--out", required=True, metavar="EVAL", help="evaluation folder to write")
    parser.add_argument("--original-size", action="store_true",
                        help="score on each image's original pixel grid instead of the prepared grid (--data only)")
    parser.add_argument("--lesion-iou", type=float, default=0.2, metavar="T",
                        help="IoU a predicted component needs with a reference mass to detect it (default 0.2)")
    add_overwrite_argument(parser, "an existing evaluation in EVAL")
    add_progress_argument(parser)
    parser.add_argument("--allow-missing", action="store_true",
                        help="count images without a prediction as empty predictions instead of failing "
                             "(with --ref, predictions without a reference are then left unscored)")


def run(args: argparse.Namespace) -> int:
    from mammoseg.evaluation.scoring import Scoring, evaluate_folders, evaluate_predictions, summary_line

    if args.ref is not None:
        if args.split is not None or args.original_size:
            raise ValueError("--split and --original-size need a prepared folder (--data), not --ref")
        summary = evaluate_folders(args.pred, args.ref, args.out, lesion_iou=args.lesion_iou,
                                   overwrite=args.overwrite, allow_missing=args.allow_missing,
                                   progress=not args.no_progress)
    else:
        scoring = Scoring(split=args.split or "holdout", original_size=args.original_size,
                          lesion_iou=args.lesion_iou, allow_missing=args.allow_missing)
        summary = evaluate_predictions(args.pred, args.data, args.out, scoring, overwrite=args.overwrite,
                                       progress=not args.no_progress)
    print(summary_line(summary))
    if summary.get("n_missing"):
        print(f"note: {summary['n_missing']} image(s) had no prediction and were counted as empty")
    if summary.get("n_unscored_predictions"):
        print(f"note: {summary['n_unscored_predictions']} prediction(s) had no reference and were not scored "
              f"(listed in {EvaluationLayout(args.out).errors})")
    layout = EvaluationLayout(args.out)
    if summary.get("froc"):
        print(f"wrote {layout.per_image}, {layout.froc} and {layout.summary}")
    else:
        print(f"wrote {layout.per_image} and {layout.summary}")
    return 0
