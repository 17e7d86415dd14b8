"""Small file helpers shared by every stage: PNG read/write and atomic writes.

Every output is written to a temporary file in the same folder and renamed into place,
so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a grey (H, W) uint8/uint16 or an RGB (H, W, 3) uint8 array as a lossless PNG, atomically."""
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    elif array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected (H, W) uint8/uint16 or (H, W, 3) uint8, got {array.dtype} {array.shape}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG (or other OpenCV-readable image) unchanged: uint8/uint16, grey as 2-D."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise FileNotFoundError(f"{path}: no such file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    if image.ndim == 3:
        # Colour or grey+alpha files: keep the luminance so masks/images drawn in any editor work.
        if image.shape[2] == 4:
            image = image[:, :, :3]
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def as_uint16(image: np.ndarray, where: str | os.PathLike) -> np.ndarray:
    """A grey image on the 16-bit scale: uint16 unchanged, uint8 × 257 (0..255 → 0..65535 exactly)."""
    if image.ndim != 2:
        raise ValueError(f"{where}: expected a grey image, got shape {image.shape}")
    if image.dtype == np.uint16:
        return image
    if image.dtype == np.uint8:
        return image.astype(np.uint16) * 257
    raise ValueError(f"{where}: unsupported image type {image.dtype}; expected 8- or 16-bit grey")


def remove_entries(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Delete the named files and folders inside `folder`: what one stage writes, nothing else."""
    for name in names:
        target = Path(folder) / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def prepare_output_dir(out: str | os.PathLike, owned: Iterable[str], overwrite: bool, what: str) -> None:
    """Create `out`, or clear the entries a stage owns in it when `overwrite`; refuse otherwise.

    A non-empty folder is never written into without being asked, and `--overwrite` removes
    only `owned` entries, so files a user keeps beside the outputs survive.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: {what} folder is not empty; choose another folder or pass --overwrite")
        remove_entries(out, owned)
    out.mkdir(parents=True, exist_ok=True)


def write_csv_atomic(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]
) -> None:
    """Write rows as CSV (header first) atomically; keys not in `fieldnames` are an error."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(fieldnames))
            writer.writeheader()
            writer.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))
