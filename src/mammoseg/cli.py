"""The one `mammoseg` command.

Each subcommand lives in `mammoseg.commands.<name>` as `add_arguments(parser)` and
`run(args) -> int`; this module only wires them up, so `mammoseg --help` stays fast
(heavy imports happen inside `run`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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
    ("export", "export", "export one fold's model to ONNX"),
]


def build_parser() -> argparse.ArgumentParser:
    from mammoseg import __version__

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
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        # User errors (bad paths, bad config, refusing to overwrite) get one clear line.
        if args.verbose:
            raise
        print(f"mammoseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
