"""Small file helpers shared by every stage: PNG read/write and atomic writes.

Every output is written to a temporary file in the same folder (`.<name>.XXXXXXXX.tmp`) and
renamed into place, so an interrupted run never leaves a half-written file behind; a run
killed inside a write leaves only such a temp file, which the next run into that folder
removes (`remove_stale_temps`). Files get the mode a plain `open()` would give
(0o666 & ~umask), so a research group can share results; `durable=True` also fsyncs the
file and its folder, for what must survive a power cut (checkpoints, manifests).
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Temp files of `atomic_path`: "." + target name + "." + mkstemp's 8 random characters + ".tmp".
_TEMP_FILE = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by a quick swap."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file gets mode 0o666 & ~umask (mkstemp's own 0o600 would hide it from colleagues);
    `durable` fsyncs the file before the rename and the folder after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        if durable:
            fd = os.open(tmp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp_path, path)
        if durable:
            _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def temp_target(path: Path) -> Path | None:
    """The file an `atomic_path` temp file was going to become (None: not such a temp file)."""
    match = _TEMP_FILE.fullmatch(path.name)
    return path.with_name(match.group("target")) if match else None


def remove_stale_temps(folder: str | os.PathLike, belongs: Callable[[Path], bool] | None = None) -> int:
    """Delete temp files a killed run left under `folder` (only those whose target `belongs`); the count."""
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            target = temp_target(path)
            if target is not None and (belongs is None or belongs(target)):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


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


def write_csv_atomic(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str], durable: bool = False
) -> None:
    """Write rows as CSV (header first) atomically; keys not in `fieldnames` are an error."""
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(fieldnames))
            writer.writeheader()
            writer.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts; a file that is not UTF-8 text or not valid CSV is a
    ValueError naming the file (and the line)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            try:
                return list(reader)
            except csv.Error as exc:
                raise ValueError(f"{path}: not valid CSV after line {reader.line_num} ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the CSV as UTF-8") from None
