"""The flags several subcommands share, defined once so they read the same in every command.

Why: users of nnU-Net and MONAI carry flags from one command to the next; `--device`,
`--no-progress`, `--overwrite`, `--run` and fold lists must mean the same everywhere. Nothing
here imports torch: `mammoseg --help` and argument parsing stay fast, so `--device` is
checked by its spelling here and against the machine when the command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

#: The spellings of --device; `mps` only where this PyTorch has `torch.backends.mps.is_available`.
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda, cuda:N{mps}; default auto"


def torch_has_mps() -> bool:
    """Whether this PyTorch has `torch.backends.mps.is_available`, found without importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return hasattr(getattr(getattr(torch, "backends", None), "mps", None), "is_available")
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        module = Path(folder) / "backends" / "mps" / "__init__.py"
        if module.is_file() and "def is_available" in module.read_text(encoding="utf-8", errors="replace"):
            return True
    return False


def device_choices() -> list[str]:
    """The device names --device accepts (besides `cuda:N`)."""
    return ["auto", "cpu", "cuda", *(["mps"] if torch_has_mps() else [])]


def device_name(text: str) -> str:
    """`--device` value: auto, cpu, cuda, cuda:N or (where this PyTorch has it) mps."""
    value = text.strip().lower()
    if value in device_choices() or re.fullmatch(r"cuda:\d+", value):
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is not a device; expected {', '.join(device_choices())} or cuda:N")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="auto", metavar="DEVICE",
                        help=DEVICE_HELP.format(mps=", mps" if torch_has_mps() else ""))


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--overwrite`: replace what this same command wrote into its output (never anything else)."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what}; only what this command wrote there is removed")


def fold_list(text: str) -> tuple[int, ...]:
    """`--folds 0,2`: distinct fold numbers in ascending order."""
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated fold numbers, e.g. 0,2") from None
    if not folds or folds[0] < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected fold numbers 0, 1, ... separated by commas")
    return tuple(folds)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value

