"""One bounded way to parse a DICOM file: every path in mammoseg that reads DICOM bytes uses `read_dicom`.

Why: mammoseg runs over archives it does not control, on shared servers, so a file may be
hostile. pydicom alone would let one small file take the machine's memory or hang a worker:

- **not a regular file**: a FIFO blocks `open` forever, a device such as `/dev/zero` never ends.
  The path is opened without blocking and refused unless it is a regular file (checked on the
  open file, so it cannot be swapped in between);
- **deflate bomb**: for Deflated Explicit VR Little Endian pydicom inflates the whole data set
  in one call — even for a header-only read — so 1.5 MB of zeros become 1.5 GiB. The data set
  is first inflated here in steps of bounded output (`zlib`'s `max_length`), counting and
  discarding, and refused as soon as it grows past `ReadLimits.max_bytes` (what an image within
  the limits can be: 136 MB by default). Only a file within that cap is then parsed by pydicom,
  so a deflated file costs at most the cap, and a bomb costs one step (16 MiB) of memory. The
  price is inflating an accepted deflated file twice (deflated files are rare);
- **anything else malformed** becomes one `DicomReadError` line that starts with the path.

Pixel data is not decoded here; `mammoseg.dicom.pixels.decode_pixels` does that, after its own
checks on the codestream (`mammoseg.dicom.codestream`).
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from mammoseg.dicom.checks import ReadLimits

#: Most bytes one inflate step may produce: the memory a deflate bomb costs before its refusal.
INFLATE_STEP = 16 * 2**20
_READ_STEP = 1 << 20


class DicomReadError(ValueError):
    """A file that cannot be used; the message is one line and starts with the file path."""


def one_line(text: object) -> str:
    """`text` with its line breaks folded, so an error from a library stays one line."""
    return " ".join(str(text).split())


def read_dicom(
    path: str | os.PathLike,
    limits: ReadLimits = ReadLimits(),
    *,
    stop_before_pixels: bool = False,
    defer_size: int | None = None,
) -> FileDataset:
    """The DICOM data set at `path`, read within `limits` (module docstring); DicomReadError otherwise.

    `stop_before_pixels` reads the header only; `defer_size` leaves values larger than that many
    bytes in the file until they are asked for (pydicom's `dcmread` options).
    """
    path = Path(path)
    with _open_regular(path) as fh:
        _check_inflated_size(fh, path, limits)
        fh.seek(0)
        try:
            return pydicom.dcmread(fh, defer_size=defer_size, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            raise DicomReadError(
                f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
            ) from None
        except Exception as exc:  # truncated or corrupt files raise many kinds of errors
            raise DicomReadError(
                f"{path}: could not be read as DICOM ({type(exc).__name__}: {one_line(exc)})"
            ) from exc


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading without blocking; DicomReadError unless it is a regular file."""
    def nonblocking(name: str, flags: int) -> int:
        return os.open(name, flags | getattr(os, "O_NONBLOCK", 0))

    try:
        fh = open(os.fspath(path), "rb", opener=nonblocking)  # noqa: SIM115 - returned to the caller
    except FileNotFoundError:
        raise DicomReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DicomReadError(f"{path}: not a regular file (a directory)") from None
    except OSError as exc:
        raise DicomReadError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    mode = os.fstat(fh.fileno()).st_mode
    if not stat.S_ISREG(mode):
        fh.close()
        raise DicomReadError(f"{path}: not a regular file ({_file_kind(mode)}); only regular files are read")
    return fh


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _deflated_start(fh: BinaryIO) -> int | None:
    """Where the deflated data set starts, for a Deflated Explicit VR Little Endian file; else None.

    Mirrors how pydicom's `read_partial` finds it (preamble; File Meta group, read again as
    implicit VR if its first element does not parse; then any Command group), with pydicom's own
    element reader, so both agree on which files are deflated and where the deflated bytes start.
    """
    def group_is_not(group: int) -> Callable[[int, object, int], bool]:  # pydicom's stop_when
        return lambda tag, vr, length: tag >> 16 != group

    try:
        read_preamble(fh, False)
        meta_start = fh.tell()
        meta = read_dataset(fh, is_implicit_VR=False, is_little_endian=True, stop_when=group_is_not(2))
        first = next(iter(meta.keys()), None)
        try:
            if first is not None:
                meta[first]
        except NotImplementedError:  # File Meta written in implicit VR
            fh.seek(meta_start)
            meta = read_dataset(fh, is_implicit_VR=True, is_little_endian=True, stop_when=group_is_not(2))
        syntax = meta.get("TransferSyntaxUID")
        read_dataset(fh, is_implicit_VR=True, is_little_endian=True, stop_when=group_is_not(0))
    except Exception:  # noqa: BLE001 - pydicom's own read of the file says what is wrong
        return None
    return fh.tell() if syntax == DeflatedExplicitVRLittleEndian else None


def _check_inflated_size(fh: BinaryIO, path: Path, limits: ReadLimits) -> None:
    """Inflate a deflated data set in bounded steps, counting; refuse it past `limits.max_bytes`."""
    start = _deflated_start(fh)
    if start is None:
        return
    fh.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    try:
        while not inflater.eof and (chunk := fh.read(_READ_STEP)):
            while chunk and not inflater.eof:
                size += len(inflater.decompress(chunk, INFLATE_STEP))  # at most one step of output
                if size > limits.max_bytes:
                    raise DicomReadError(
                        f"{path}: deflated data inflates beyond {limits.max_bytes / 2**20:.0f} MB, more than "
                        "an image within the limits can be (a deflate bomb?)"
                    )
                chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise DicomReadError(f"{path}: deflated data set is corrupt ({exc})") from None
