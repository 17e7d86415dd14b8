"""Write synthetic mammogram phantoms (real DICOM + masks) in the manifest, INbreast or CBIS-DDSM layout.

Each patient gets CC and MLO views of both breasts; about a quarter of the breasts have no
mass (in the CBIS-DDSM layout every image has one, as that dataset lists only masses).
The same --seed always gives byte-identical files.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mammoseg.commands.options import add_overwrite_argument, add_progress_argument

#: Kept here (not imported) so `mammoseg --help` does not load numpy and OpenCV.
FORMATS = ("manifest", "inbreast", "cbis-ddsm")


def parse_shape(text: str) -> tuple[int, int]:
    """`HxW` (e.g. `1000x800`) as (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HxW such as 1000x800, got {text!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 64 or width < 64:
        raise argparse.ArgumentTypeError(f"shape must be at least 64x64, got {height}x{width}")
    return height, width


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty or new)")
    parser.add_argument("--patients", type=_positive_int, default=12, help="number of patients (default 12)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="manifest",
                        help="layout to write (default manifest)")
    parser.add_argument("--shape", type=parse_shape, default=(1000, 800), metavar="HxW",
                        help="image size in pixels (default 1000x800; 4084x3328 is full-field; at most 60 Mpx and 5:1, "
                             "what mammoseg reads)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    parser.add_argument("--markers", action=argparse.BooleanOptionalAction, default=True,
                        help="non-breast content as on real films: a bright label (e.g. 'L CC') in the background and, "
                             "on every fourth image, a bright collimator strip along the far edge (default on; "
                             "--no-markers writes the phantoms of earlier versions)"),
    add_overwrite_argument(parser, "what an earlier synth wrote into --out")
    parser.add_argument("--cbis-naming", choices=("new", "old"), default=None,
                        help="--format cbis-ddsm: current TCIA download folder naming (new, the default) or the "
                             "old UID folders")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from mammoseg.sources.synthetic import SynthStyle, write_synthetic_dataset

    if args.cbis_naming is not None and args.fmt != "cbis-ddsm":
        raise ValueError(f"--cbis-naming applies to --format cbis-ddsm only, not {args.fmt}")
    summary = write_synthetic_dataset(
        args.out,
        patients=args.patients,
        fmt=args.fmt,
        shape=args.shape,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        style=SynthStyle(naming=args.cbis_naming or "new", markers=args.markers),
    )
    print(
        f"wrote {summary.n_images} images ({summary.n_with_mass} with a mass) of {summary.n_patients} "
        f"patient{'s' if summary.n_patients != 1 else ''} to {summary.out} in the {summary.fmt} layout"
    )
    print(f"next: mammoseg prepare --format {summary.fmt} --src {summary.out} --out <prepared folder>")
    return 0
