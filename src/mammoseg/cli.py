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
    ("listen", "listen", "a DICOM node: C-STORE in, prediction, DICOM SEG and SR out (C-STORE)"),
]


EPILOG = """\
every command: -v/--verbose (before or after COMMAND) shows debug logs and tracebacks; --no-progress
hides progress bars; --overwrite replaces what that same command wrote into its --out (never anything
else); --device auto|cpu|cuda|cuda:N (train, predict, reproduce, demo, listen); the run folder is --run RUN.
Bad input is one line and exit 2, checked before anything is written.
Config keys: `mammoseg train --print-config [--config demo] [key=value ...]`, docs/config.md.
"""


def _verbose_flag(default: object) -> argparse.ArgumentParser:
    """`-v/--verbose`, accepted before and after the subcommand (after it, only a given flag sets it)."""
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parent.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging and tracebacks")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammoseg",
        description="Breast mass segmentation in mammograms (Isosalo, Mustonen et al., SPIE MI 2022).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        parents=[_verbose_flag(False)],
    )
    parser.add_argument("--version", action="version", version=f"mammoseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"mammoseg.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                           parents=[_verbose_flag(argparse.SUPPRESS)])
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line; `key=value` overrides may stand anywhere after the subcommand
    (`train ... crop_size=256 --no-progress n_folds=2`), not only in one block."""
    args, extra = parser.parse_known_args(argv)
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if extra and (len(overrides) < len(extra) or not isinstance(getattr(args, "overrides", None), list)):
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}{_did_you_mean(args._parser, extra)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def _did_you_mean(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """Flags are never abbreviated (`--in` is not `--input`): name the ones an unknown flag begins."""
    known = sorted(flag for flag in parser._option_string_actions if flag.startswith("--"))
    for given in extra:
        matches = [flag for flag in known if flag.startswith(given.split("=", 1)[0])] if given.startswith("--") else []
        if matches:
            return f" (did you mean {' or '.join(matches)}? flags are not abbreviated)"
    return ""


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


def one_line(message: str) -> str:
    """The first line of a message that has several (a library's error may carry a trace): the console
    gets one line per failure; -v shows all of it."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else message
    return f"{lines[0]} [...]" + ("" if "run with -v" in lines[0] else " (run with -v for the rest)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
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
        print(f"mammoseg {args.command}: error: {one_line(message)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
