"""Small file helpers shared by every stage: PNG read/write and atomic writes.

Every output is written to a temporary file in the same folder and renamed into place, so an
interrupted run never leaves a half-written file behind. A temp file's name says who wrote it:
`.<name>.<pid>-<start>-<host>.XXXXXXXX.tmp` (process id, the process's start time in clock
ticks since boot, a digest of the host name). A run killed inside a write leaves only such a
temp file, which a later run into that folder removes (`remove_stale_temps`) once the process
that wrote it is gone; the temp files of a job still running beside it (another fold, another
shard) are left alone, and so are those written on another host, which cannot be checked. Files get the mode a plain `open()` would give
(0o666 & ~umask), so a research group can share results; `durable=True` also fsyncs the
file and its folder, for what must survive a power cut (checkpoints, manifests).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Temp files of `atomic_path`: "." + target name + "." + writer + "." + mkstemp's 8 random characters + ".tmp";
#: the writer (pid-start-host) is absent from the temp files of earlier versions.
_TEMP_FILE = re.compile(r"\.(?P<target>.+?)(?:\.(?P<pid>\d+)-(?P<start>\d+)-(?P<host>[0-9a-f]{8}))?\.[a-z0-9_]{8}\.tmp")


def host_digest() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, from /proc), None if it does not exist or
    this system has no /proc: with the pid it identifies a process even after its pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); the two before the ")" are split off
    except (OSError, ValueError, IndexError):
        return None


def _writer_tag() -> str:
    pid = os.getpid()
    return f"{pid}-{process_start(pid) or 0}-{host_digest()}"


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


def open_no_follow(path: Path, flags: int) -> int:
    """os.open that refuses a symbolic link at `path` (a planted link must not redirect a write)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        if path.is_symlink():
            raise FileExistsError(f"{path}: is a symbolic link; mammoseg never writes through a link it did not "
                                  "create: remove the link, or choose another --out") from exc
        raise


def special_file_kind(path: str | os.PathLike) -> str:
    """'' for a regular file (or a folder, or nothing at all), else what it is ("a FIFO", "a socket",
    "a device"): reading one can block forever or never end, so inputs must be regular files."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return ""


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}.", suffix=".tmp", dir=path.parent)
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


def is_stale_temp(path: Path) -> bool:
    """Whether `path` is an `atomic_path` temp file whose writer is gone: a process of this host that
    no longer runs (or whose pid now belongs to a later process), or a temp file of an earlier version."""
    match = _TEMP_FILE.fullmatch(path.name)
    if match is None:
        return False
    if match.group("pid") is None:
        return True
    if match.group("host") != host_digest():
        return False  # another machine's process: it may still be writing
    start = process_start(int(match.group("pid")))
    return start is None or (int(match.group("start")) != 0 and start != int(match.group("start")))


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temp files killed runs left under `folder` (`is_stale_temp`); the count."""
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if is_stale_temp(path):
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
    """Rows of a CSV file as dicts; a file that is not UTF-8 text or not valid CSV, or whose header
    names a column twice (the last would silently win), is a ValueError naming the file (and the line)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            try:
                _check_header(path, reader.fieldnames or [])
                return list(reader)
            except csv.Error as exc:
                raise ValueError(f"{path}: not valid CSV after line {reader.line_num} ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the CSV as UTF-8") from None


def _check_header(path: str | os.PathLike, names: Sequence[str]) -> None:
    first: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if name and name in first:
            raise ValueError(f"{path}: column {name!r} appears twice in the header (columns {first[name]} and "
                             f"{number}); keep one")
        first.setdefault(name, number)


def missing_columns(path: str | os.PathLike, header: Sequence[str], required: Sequence[str]) -> ValueError | None:
    """The error for a CSV header lacking `required` columns (None when none is missing), saying why
    where it can tell: a file separated by ';' or tabs, or column names padded with spaces."""
    missing = [c for c in required if c not in header]
    if not missing:
        return None
    joined = ",".join(header)
    if len(header) == 1 and (";" in joined or "\t" in joined):
        separator = "';'" if ";" in joined else "tabs"
        return ValueError(f"{path}: the header is one column separated by {separator}; mammoseg reads "
                          "comma-separated CSV: save it with ',' as the separator")
    padded = [name for name in header if name != name.strip() and name.strip() in missing]
    if padded:
        return ValueError(f"{path}: column name(s) {', '.join(repr(n) for n in padded)} have spaces around them; "
                          f"write them as {', '.join(n.strip() for n in padded)}")
    return ValueError(f"{path}: missing column(s) {', '.join(missing)}")


