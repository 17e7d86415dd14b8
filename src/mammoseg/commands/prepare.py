"""Turn a dataset (manifest CSV, INbreast or CBIS-DDSM) into a prepared folder.

Writes images/<id>.png (16-bit, windowed, padded to square and resized), masks/<id>.png
(0/255), manifest.csv with a patient-grouped train/holdout split, and errors.csv listing
inputs that could not be used. A rerun into the same folder with the same settings
resumes where the last run stopped.
"""

from __future__ import annotations

import argparse

FORMATS = ("manifest", "inbreast", "cbis-ddsm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of the source")
    parser.add_argument("--src", required=True, help="dataset folder (or, for manifest, the CSV itself)")
    parser.add_argument("--out", required=True, help="prepared folder to write")
    parser.add_argument("--size", type=int, default=512, help="side of the square output images (default 512)")
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of images held out, by patient (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/holdout split (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any input failed")
    parser.add_argument(
        "--csv",
        action="append",
        default=[],
        metavar="FILE",
        help="manifest CSV, or CBIS-DDSM description CSV (repeatable; default: found under --src)",
    )
    parser.add_argument(
        "--keep-official-split",
        action="store_true",
        help="CBIS-DDSM: keep the dataset's train/test split as train/holdout",
    )
    parser.add_argument(
        "--mass-names",
        default=None,
        metavar="NAMES",
        help="INbreast: comma-separated ROI names that are masses (default: Mass)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def source_options(args: argparse.Namespace) -> dict:
    """The options of `iter_records` for the chosen format; flags of another format are an error."""
    options: dict = {}
    if args.mass_names is not None:
        if args.format != "inbreast":
            raise ValueError("--mass-names applies to --format inbreast only")
        names = tuple(n.strip() for n in args.mass_names.split(",") if n.strip())
        if not names:
            raise ValueError("--mass-names: give at least one ROI name")
        options["mass_names"] = names
    if args.keep_official_split:
        if args.format != "cbis-ddsm":
            raise ValueError("--keep-official-split applies to --format cbis-ddsm only")
        options["keep_official_split"] = True
    if args.csv:
        if args.format == "inbreast":
            raise ValueError("--csv applies to --format manifest or cbis-ddsm")
        options["csv"] = list(args.csv)
    return options


def run(args: argparse.Namespace) -> int:
    from mammoseg.prepare import prepare_dataset

    summary = prepare_dataset(
        args.format,
        args.src,
        args.out,
        size=args.size,
        holdout=args.holdout,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        strict=args.strict,
        progress=not args.no_progress,
        **source_options(args),
    )
    print(summary.format())
    return summary.exit_code
