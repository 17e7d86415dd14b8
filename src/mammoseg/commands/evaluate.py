"""Per-image Dice and IoU, and lesion-level detection, of a prediction folder.

Compares <PRED>/masks/<id>.png with the reference masks of one split of a prepared folder
and writes <EVAL>/per_image.csv and <EVAL>/summary.json. Both-empty images score 1, images
where exactly one mask is empty score 0; the summary says how many of each there were.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="PRED", help="prediction folder written by `mammoseg predict`")
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared folder with the reference masks")
    parser.add_argument("--split", choices=("holdout", "train"), default="holdout",
                        help="which split of the prepared folder to score (default holdout)")
    parser.add_argument("--out", required=True, metavar="EVAL", help="evaluation folder to write")
    parser.add_argument("--original-size", action="store_true",
                        help="score on each image's original pixel grid instead of the prepared grid")
    parser.add_argument("--lesion-iou", type=float, default=0.2, metavar="T",
                        help="IoU a predicted component needs with a reference mass to detect it (default 0.2)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing evaluation in EVAL")
    parser.add_argument("--allow-missing", action="store_true",
                        help="count images without a prediction as empty predictions instead of failing")


def run(args: argparse.Namespace) -> int:
    from mammoseg.evaluate import evaluate_predictions, summary_line

    summary = evaluate_predictions(
        args.pred,
        args.data,
        args.out,
        split=args.split,
        original_size=args.original_size,
        lesion_iou=args.lesion_iou,
        overwrite=args.overwrite,
        allow_missing=args.allow_missing,
    )
    print(summary_line(summary))
    if summary.get("n_missing"):
        print(f"note: {summary['n_missing']} image(s) had no prediction and were counted as empty")
    print(f"wrote {args.out}/per_image.csv and {args.out}/summary.json")
    return 0
