"""The one `mammoseg` command.

Each subcommand lives in `mammoseg.commands.<name>` as `add_arguments(parser)` and
`run(args) -> int`; this module only wires them up, so `mammoseg --help` stays fast
(heavy imports happen inside `run`).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from mammoseg.folders import FolderInUse
from mammoseg.version import __version__

#: (subcommand, module under mammoseg.commands, one-line help), in pipeline order.
COMMANDS: list[tuple[str, str, str]] = [
    ("synth", "synth", "write synthetic mammogram phantoms (DICOM + masks)"),
    ("prepare", "prepare", "DICOM/PNG sources -> prepared folder of 16-bit PNGs"),
    ("train", "train", "train the 5-fold cross-validation models"),
    ("predict", "predict", "fold-ensemble prediction on prepared images or DICOM files"),
    ("evaluate", "evaluate", "per-image Dice/IoU and lesion-level detection"),
    ("report", "report", "the paper's Table 2 and Figure 2 for one or more runs"),
    ("view", "view", "a static results site: every case, sortable, filterable, full-size layers"),
    ("reproduce", "reproduce", "the paper's whole experiment on a prepared dataset"),
    ("demo", "demo", "the whole pipeline on synthetic phantoms, end to end"),
    ("export", "export", "export a run to ONNX (one fold or the ensemble) or as a shareable .mseg bundle"),
    ("models", "models", "install, list, show and remove shared model bundles"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammoseg",
        description="Breast mass segmentation in mammograms (Isosalo, Mustonen et al., SPIE MI 2022).",
    )
    parser.add_argument("--version", action="version", version=f"mammoseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"mammoseg.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


#: Failures caused by what the user gave (paths, files, settings): exit status 2.
BAD_INPUT = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ValueError, ImportError)


def failure_message(exc: BaseException) -> tuple[str, int]:
    """One line saying what failed and what to do, and the exit status (2 bad input, 1 failed run)."""
    if isinstance(exc, PermissionError):
        return f"{exc.filename or exc}: permission denied; check the permissions or choose another folder", 2
    if isinstance(exc, BAD_INPUT):
        return str(exc), 2
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{exc.filename or 'disk'}: no space left on the device; free some space or write elsewhere", 1
    if isinstance(exc, MemoryError):
        return "out of memory; use fewer --workers or a smaller batch size", 1
    if isinstance(exc, (FloatingPointError, FolderInUse)):
        return str(exc), 1
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{text} (run with -v for the traceback)", 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure is one line; -v shows the traceback
        if args.verbose:
            raise
        message, status = failure_message(exc)
        print(f"mammoseg {args.command}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
