"""Fold-ensemble prediction with a trained run.

Averages the fold models' probabilities (the paper's ensemble) and thresholds them.
Inputs are prepared folders (masks at the prepared size) or DICOM files/folders (masks
on each DICOM's original pixel grid, optionally also as DICOM Segmentation objects).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="run folder written by `mammoseg train`")
    parser.add_argument(
        "--input", required=True, nargs="+", metavar="DIR|FILE",
        help="prepared folder(s) (with manifest.csv), DICOM folder(s) or DICOM file(s)",
    )
    parser.add_argument("--out", required=True, metavar="PRED", help="prediction folder to write")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    parser.add_argument("--tta", action="store_true", help="also predict the horizontally flipped image and average")
    parser.add_argument("--save-prob", action="store_true", help="also write prob/<id>.png (uint16 probability)")
    parser.add_argument("--dicom-seg", action="store_true", help="write seg/<id>.dcm DICOM Segmentations for DICOM inputs")
    parser.add_argument(
        "--split", choices=("holdout", "train", "all"), default="all",
        help="rows of a prepared folder to predict (default all)",
    )
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per forward pass (default 4)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an existing prediction folder")


def run(args: argparse.Namespace) -> int:
    from mammoseg.predict import predict

    summary = predict(
        args.run,
        args.input,
        args.out,
        threshold=args.threshold,
        tta=args.tta,
        save_prob=args.save_prob,
        dicom_seg=args.dicom_seg,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
    )
    print(
        f"predicted {summary['n_predicted']} image(s) with {len(summary['checkpoints'])} fold model(s) "
        f"into {summary['out_dir']}"
        + (f"; {summary['n_errors']} input(s) skipped, see errors.csv" if summary["n_errors"] else "")
    )
    return 0 if summary["n_predicted"] > 0 else 1
