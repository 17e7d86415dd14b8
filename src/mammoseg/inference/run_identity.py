"""Which trained models a run holds, as a short digest: what makes two predictions "the same".

Why: a SEG stored back to a PACS must say which models made it, so a rerun can find it
instead of storing a second one. A run's name is not enough (a run retrained under the same
name is another run, a run folder copied elsewhere is the same one), so the id is computed
from the fold checkpoints' bytes: SHA-256 over, for each fold in fold order, the fold
folder's name and the SHA-256 of its `best.pt`; the first 16 hex digits are the run id.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mammoseg.dicom.seg import SegIdentity
from mammoseg.layouts import RunLayout

#: Hex digits of the SHA-256 kept as the run id (64 bits: no two runs of a group collide).
RUN_ID_HEX = 16
_BLOCK = 1 << 20


def _file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.digest()


def run_id(run_dir: str | os.PathLike) -> str:
    """The run id of `run_dir` (module docstring); FileNotFoundError when it has no fold checkpoints."""
    layout = RunLayout(run_dir)
    paths = layout.best_checkpoints()
    if not paths:
        raise FileNotFoundError(f"{layout.root}: no fold*/best.pt checkpoints; has this run been trained "
                                "(`mammoseg train`)?")
    total = hashlib.sha256()
    for path in paths:
        total.update(path.parent.name.encode() + b"\0" + _file_sha256(path))
    return total.hexdigest()[:RUN_ID_HEX]


def run_identity(run_dir: str | os.PathLike, threshold: float, known_run_id: str | None = None) -> SegIdentity:
    """The SEG identity of predictions by `run_dir` at `threshold`; the run's name is its folder's name.

    `known_run_id`: the run id already computed for this run (hashing the checkpoints again is slow).
    """
    return SegIdentity(Path(run_dir).resolve().name, known_run_id or run_id(run_dir), threshold)
