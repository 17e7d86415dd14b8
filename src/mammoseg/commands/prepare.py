"""Turn a dataset (manifest CSV, INbreast, CBIS-DDSM or a DICOMweb server) into a prepared folder.

Writes images/<id>.png (16-bit, windowed, cut to the breast (--no-crop: not), padded to square and resized), masks/<id>.png
(0/255), manifest.csv with a patient-grouped train/holdout split, and errors.csv listing
inputs that could not be used. A rerun into the same folder with the same settings
resumes where the last run stopped.

On a cluster: `--parts N --part I` prepares one shard of the inputs into the shared --out
(e.g. a SLURM array job, --part $SLURM_ARRAY_TASK_ID); `mammoseg prepare --merge --out DIR`
then writes manifest.csv and errors.csv, the same as a one-machine run (docs/scaling.md).
"""

from __future__ import annotations

import argparse

from mammoseg.commands.options import add_overwrite_argument, add_progress_argument
from mammoseg.dicomweb.source import add_source_arguments, source_flags_given, source_from_args
from mammoseg.shards import add_shard_arguments

FORMATS = ("manifest", "inbreast", "cbis-ddsm", "dicomweb")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, help="layout of the source (required unless --merge)")
    parser.add_argument(
        "--src", help="dataset folder (manifest: or the CSV itself; dicomweb: the server's DICOMweb URL)"
    )
    parser.add_argument("--out", required=True, help="prepared folder to write")
    parser.add_argument("--size", type=int, default=512,
                        help="side of the square output images, 16 to 8192 (default 512)")
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of images held out, by patient (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/holdout split (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                        help="cut each image to the box around the breast before padding and resizing (default "
                             "on); --no-crop writes the folder earlier versions wrote, e.g. to resume one")
    add_overwrite_argument(parser, "an existing prepared folder")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any input failed")
    add_shard_arguments(parser, "prepare", "manifest.csv and errors.csv")
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
    add_source_arguments(parser, "dicomweb")
    add_progress_argument(parser)


def _dicomweb_options(args: argparse.Namespace) -> dict:
    """Options of the dicomweb source (what the prepared folder records); its flags with another format are an error."""
    if args.format != "dicomweb":
        given = source_flags_given(args)
        if given:
            raise ValueError(f"{', '.join(given)} apply to --format dicomweb only")
        return {}
    return source_from_args(args.src, args).options()


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
        if args.format not in ("manifest", "cbis-ddsm"):
            raise ValueError("--csv applies to --format manifest or cbis-ddsm")
        options["csv"] = list(args.csv)
    options.update(_dicomweb_options(args))
    return options


def run(args: argparse.Namespace) -> int:
    from mammoseg.prepare import PrepareOptions, merge_prepared, prepare_dataset
    from mammoseg.shards import parse_part

    if args.merge:
        if args.src or args.format or args.parts is not None or args.part is not None:
            raise ValueError("--merge takes --out (and --holdout, --seed, --strict): the shards recorded the rest")
        summary = merge_prepared(args.out, holdout=args.holdout, seed=args.seed, strict=args.strict)
        print(summary.format())
        return summary.exit_code
    if not args.format or not args.src:
        raise ValueError("--format and --src are required (unless --merge)")
    part = parse_part(args.parts, args.part)
    sources = source_options(args)
    src = args.src
    if args.format == "dicomweb":
        # The server's instances are fetched into the cache, which is what prepare reads from.
        src = source_from_args(args.src, args).cache
        src.mkdir(parents=True, exist_ok=True)
    options = PrepareOptions(size=args.size, holdout=args.holdout, seed=args.seed, workers=args.workers,
                             strict=args.strict, progress=not args.no_progress, crop=args.crop)
    summary = prepare_dataset(args.format, src, args.out, options, overwrite=args.overwrite, part=part,
                              **sources)
    print(summary.format())
    return summary.exit_code
