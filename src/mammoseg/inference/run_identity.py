"""Which trained models a run holds, as a short digest: what makes two predictions "the same".

Why: a SEG stored back to a PACS must say which models made it, so a rerun can find it
instead of storing a second one. A run's name is not enough (a run retrained under the same
name is another run, a run folder copied elsewhere is the same one), so the id is computed
from the fold checkpoints' bytes: SHA-256 over, for each fold in fold order, the fold
folder's name and the SHA-256 of its `best.pt`; the first 16 hex digits are the run id.

A model bundle (`mammoseg export --bundle`) re-saves each fold's weights without anything else,
so its checkpoints' bytes differ from the run's; it records the run's own digest of each fold
(`source_sha256`), and its id is the run id computed from those. A run folder unpacked from a
bundle carries the bundle's manifest (`RunLayout.bundle_marker`); where every fold's `best.pt`
still has the digest that manifest lists, the recorded run digests stand in for them, so
predicting from the bundle gives the SEGs the same run id as predicting from the run. A fold
changed after unpacking breaks the match, and the id is then the plain digest of the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from mammoseg.dicom.seg import SegIdentity
from mammoseg.layouts import RunLayout

#: Hex digits of the SHA-256 kept as the run id (64 bits: no two runs of a group collide).
RUN_ID_HEX = 16
_BLOCK = 1 << 20


def file_sha256(path: Path) -> bytes:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.digest()


def id_from_digests(folds: Sequence[tuple[str, bytes]]) -> str:
    """The run id of folds given as (fold folder name, SHA-256 of its best.pt), in fold order."""
    total = hashlib.sha256()
    for name, digest in folds:
        total.update(name.encode() + b"\0" + digest)
    return total.hexdigest()[:RUN_ID_HEX]


def fold_digests(run_dir: str | os.PathLike) -> list[tuple[str, bytes]]:
    """Each fold's (folder name, SHA-256 of the run's best.pt), in fold order; for a folder
    unpacked from a bundle whose checkpoints are unchanged, the digests the bundle recorded."""
    layout = RunLayout(run_dir)
    paths = layout.best_checkpoints()
    if not paths:
        raise FileNotFoundError(f"{layout.root}: no fold*/best.pt checkpoints; has this run been trained "
                                "(`mammoseg train`)?")
    found = [(path.parent.name, file_sha256(path)) for path in paths]
    return _recorded_digests(layout, found) or found


def _recorded_digests(layout: RunLayout, found: list[tuple[str, bytes]]) -> list[tuple[str, bytes]] | None:
    """The run digests a bundle's manifest records for exactly these checkpoints, else None."""
    try:
        manifest = json.loads(layout.bundle_marker.read_text(encoding="utf-8"))
        folds = manifest["folds"]
        listed = [(f"fold{int(f['fold'])}", str(manifest["members"][f["member"]]["sha256"])) for f in folds]
        recorded = [(f"fold{int(f['fold'])}", bytes.fromhex(str(f["source_sha256"]))) for f in folds]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if listed != [(name, digest.hex()) for name, digest in found]:
        return None
    return recorded


def run_id(run_dir: str | os.PathLike) -> str:
    """The run id of `run_dir` (module docstring); FileNotFoundError when it has no fold checkpoints."""
    return id_from_digests(fold_digests(run_dir))


def run_identity(run_dir: str | os.PathLike, threshold: float, known_run_id: str | None = None) -> SegIdentity:
    """The SEG identity of predictions by `run_dir` at `threshold`; the run's name is its folder's name.

    `known_run_id`: the run id already computed for this run (hashing the checkpoints again is slow).
    """
    return SegIdentity(Path(run_dir).resolve().name, known_run_id or run_id(run_dir), threshold)
