"""Fold-ensemble prediction with a trained run.

Averages the fold models' probabilities (the paper's ensemble) and thresholds them.
Inputs are prepared folders (masks at the prepared size) or DICOM files/folders (masks
on each DICOM's original pixel grid, optionally also as DICOM Segmentation objects),
streamed: an archive's first masks appear at once. `--resume` continues an interrupted run;
`--parts N --part I` predicts one shard into a shared --out, `--merge` completes it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", metavar="RUN", help="run folder written by `mammoseg train` (required unless --merge)")
    parser.add_argument(
        "--input", nargs="+", metavar="DIR|FILE",
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
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted prediction: skip inputs whose outputs are complete")
    parser.add_argument("--parts", type=int, default=None, metavar="N", help="split the inputs into N shards ...")
    parser.add_argument("--part", type=int, default=None, metavar="I", help="... and predict shard I (0..N-1)")
    parser.add_argument("--merge", action="store_true",
                        help="after every --parts shard finished: write predictions.csv and errors.csv of --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mammoseg.predict import merge_predictions, predict
    from mammoseg.shards import parse_part

    if args.merge:
        if args.run or args.input or args.parts is not None or args.part is not None:
            raise ValueError("--merge takes --out only: the shards recorded the rest")
        summary = merge_predictions(args.out)
    else:
        if not args.run or not args.input:
            raise ValueError("--run and --input are required (unless --merge)")
        summary = predict(
            args.run, args.input, args.out, threshold=args.threshold, tta=args.tta, save_prob=args.save_prob,
            dicom_seg=args.dicom_seg, split=args.split, batch_size=args.batch_size, device=args.device,
            overwrite=args.overwrite, progress=not args.no_progress, resume=args.resume,
            part=parse_part(args.parts, args.part),
        )
    print(
        f"predicted {summary['n_predicted']} image(s) into {summary['out_dir']}"
        + (f" ({summary['part']}; when every part is done: mammoseg predict --merge --out {summary['out_dir']})"
           if summary.get("part", "the whole job") != "the whole job" else "")
        + (f"; {summary['n_errors']} input(s) skipped, see errors.csv" if summary["n_errors"] else "")
    )
    shard = summary.get("part", "").startswith("part ")  # a shard's share may hold no image at all
    return 0 if summary["n_predicted"] > 0 or shard else 1
