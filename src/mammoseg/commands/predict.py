"""Fold-ensemble prediction with a trained run.

Averages the fold models' probabilities (the paper's ensemble) and thresholds them, with the
post-processing the run chose on its out-of-fold predictions (postprocessing.json: threshold,
minimum component area, most probable component only); `--threshold` replaces only the
threshold, `--no-postprocessing` gives every component thresholded at --threshold (default 0.5).
Inputs are prepared folders (masks at the prepared size) or DICOM files/folders (masks
on each DICOM's original pixel grid, optionally also as DICOM Segmentation objects),
streamed: an archive's first masks appear at once; or the For Presentation mammograms of
studies on a DICOMweb server (--dicomweb), whose DICOM Segmentations --store sends back to
it, once per image, run and threshold. `--resume` continues an interrupted run; `--parts N
--part I` predicts one shard into a shared --out, `--merge` completes it. `--run` (or `--model`)
also takes a model bundle file or the name of an installed one (`mammoseg models`): its members are
verified against its manifest before anything is loaded, and its SEGs record the run id of the run
it was exported from.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mammoseg.commands.options import add_device_argument, add_overwrite_argument, add_progress_argument, fold_list
from mammoseg.dicomweb.source import add_source_arguments, source_flags_given, source_from_args
from mammoseg.shards import add_shard_arguments

if TYPE_CHECKING:  # torch is imported when a command runs, not to parse its flags
    from mammoseg.inference.predict import PredictOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--run", metavar="RUN",
                       help="run folder written by `mammoseg train`, or a .mseg bundle (required unless --merge)")
    model.add_argument("--model", metavar="NAME|FILE",
                       help="an installed model (`mammoseg models install`) or a .mseg bundle, instead of --run")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input", nargs="+", metavar="DIR|FILE",
        help="prepared folder(s) (with manifest.csv), DICOM folder(s) or DICOM file(s)",
    )
    source.add_argument("--dicomweb", metavar="URL", help="DICOMweb service root of a PACS or archive (see below)")
    parser.add_argument("--out", required=True, metavar="PRED", help="prediction folder to write")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold (default: a bundle's published one, else the run's chosen one "
                             "in postprocessing.json, else 0.5); the run's component rules still apply")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="leave out the run's chosen post-processing: every component of the probability "
                             "thresholded at --threshold (default 0.5)")
    parser.add_argument("--tta", action="store_true", help="also predict the horizontally flipped image and average")
    parser.add_argument("--save-prob", action="store_true", help="also write prob/<id>.png (uint16 probability)")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="write seg/<id>.dcm DICOM Segmentations for DICOM inputs (always on with --dicomweb)")
    parser.add_argument("--dicom-sr", action="store_true",
                        help="also write sr/<id>.dcm, a DICOM SR of each mass's area, diameter, centroid, box and "
                             "mean probability (with the SEG it references)")
    parser.add_argument(
        "--split", choices=("holdout", "train", "all"), default="all",
        help="rows of a prepared folder to predict (default all)",
    )
    parser.add_argument("--folds", type=fold_list, default=None, metavar="0,2",
                        help="average only these folds' models (default: every trained fold; --input only)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per forward pass (default 4)")
    add_device_argument(parser)
    add_overwrite_argument(parser, "the outputs of an existing prediction folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted prediction: skip inputs whose outputs are complete")
    add_shard_arguments(parser, "predict", "predictions.csv and errors.csv")
    add_progress_argument(parser)
    group = add_source_arguments(parser, "--dicomweb")
    group.add_argument("--store", action="store_true",
                       help="send each SEG and its SR back (STOW-RS), unless this run and threshold stored them before")
    group.add_argument("--force", action="store_true", help="with --store: store new SEGs and SRs even where some exist")


def predict_options(args: argparse.Namespace) -> PredictOptions:
    from mammoseg.inference.predict import PredictOptions

    return PredictOptions(threshold=args.threshold, tta=args.tta, save_prob=args.save_prob, dicom_seg=args.dicom_seg,
                          dicom_sr=args.dicom_sr, split=args.split, batch_size=args.batch_size, device=args.device,
                          progress=not args.no_progress, folds=args.folds, postprocessing=not args.no_postprocessing)


def resolve_run(args: argparse.Namespace) -> None:
    """`--run`/`--model` as a run folder (a bundle verified and unpacked), and the threshold to use (None: the
    run's chosen one, else 0.5, once predict has read the run)."""
    from mammoseg.bundle.store import resolve_model

    spec = args.run or args.model
    source = resolve_model(spec) if spec else None
    args.run = str(source.run_dir) if source else None
    if args.threshold is None and source is not None and source.threshold is not None:
        args.threshold = source.threshold


def run(args: argparse.Namespace) -> int:
    from mammoseg.inference.predict import merge_predictions, predict
    from mammoseg.shards import parse_part

    if args.merge and (args.run or args.model):
        raise ValueError("--merge takes --out only: the shards recorded the rest")
    resolve_run(args)

    if args.dicomweb:
        if args.resume or args.parts is not None or args.merge or args.folds is not None:
            raise ValueError("--resume, --parts, --merge and --folds apply to --input, not --dicomweb "
                             "(a stored SEG names the whole run)")
        return _run_dicomweb(args)
    given = source_flags_given(args) + [flag for flag in ("--store", "--force") if getattr(args, flag[2:])]
    if given:
        raise ValueError(f"{', '.join(given)}: only with --dicomweb")
    if args.merge:
        if args.run or args.input or args.parts is not None or args.part is not None or args.folds is not None:
            raise ValueError("--merge takes --out only: the shards recorded the rest")
        summary = merge_predictions(args.out)
    else:
        if not args.run or not args.input:
            raise ValueError("--run and --input (or --dicomweb) are required (unless --merge)")
        summary = predict(args.run, args.input, args.out, predict_options(args), overwrite=args.overwrite,
                          resume=args.resume, part=parse_part(args.parts, args.part))
    print(
        f"predicted {summary['n_predicted']} image(s) into {summary['out_dir']}"
        + (f" ({summary['part']}; when every part is done: mammoseg predict --merge --out {summary['out_dir']})"
           if summary.get("part", "the whole job") != "the whole job" else "")
        + (f"; {summary['n_errors']} input(s) skipped, see errors.csv" if summary["n_errors"] else "")
    )
    shard = summary.get("part", "").startswith("part ")  # a shard's share may hold no image at all
    return 0 if summary["n_predicted"] > 0 or shard else 1


def _run_dicomweb(args: argparse.Namespace) -> int:
    """Exit 0 when every mammogram was predicted (and, with --store, its SEG and SR are on the server), else 1."""
    from mammoseg.inference.dicomweb import DicomWebJob, predict_dicomweb

    job = DicomWebJob(source_from_args(args.dicomweb, args), store=args.store, force=args.force,
                      overwrite=args.overwrite)
    summary = predict_dicomweb(args.run, job, args.out, predict_options(args))
    web = summary["dicomweb"]
    parts = [f"predicted {summary['n_predicted']} of {web['n_mammograms']} mammogram(s) from {web['url']} with "
             f"{len(summary['checkpoints'])} fold model(s) into {summary['out_dir']}"]
    if web["n_skipped"]:
        parts.append(f"{web['n_skipped']} other instance(s) skipped, see skipped.csv")
    if summary["n_errors"]:
        parts.append(f"{summary['n_errors']} failed, see errors.csv")
    if web["store"]:
        parts.append(f"SEGs: {web['n_stored']} stored, {web['n_already_stored']} already stored, "
                     f"{web['n_store_failed']} failed; SRs: {web['n_sr_stored']} stored, "
                     f"{web['n_sr_already_stored']} already stored, {web['n_sr_store_failed']} failed (stored.csv)")
    print("; ".join(parts))
    return 0 if web["n_failed"] == 0 else 1
