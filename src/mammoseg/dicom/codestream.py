"""The size a compressed frame decodes to, read from its own codestream header before decoding.

Why: decoders size their output from the codestream, not from the DICOM header. A 2.4 KB file
whose header says 64 × 64 can carry a JPEG 2000 codestream of 10000 × 10000, which openjpeg
decodes in full (+550 MB) before pydicom notices the mismatch. So, before any frame is
decoded, each frame's header is parsed from the bytes and compared with Rows × Columns,
Samples per Pixel and the pixel cap (`ReadLimits.max_pixels`):

- **JPEG 2000** (and HTJ2K): the SIZ marker right after SOC (inside a JP2 wrapper's `jp2c` box
  if the frame has one): width Xsiz − XOsiz, height Ysiz − YOsiz, Csiz components;
- **JPEG** (SOF0–SOF15) and **JPEG-LS** (SOF55, 0xFFF7): the frame header's Y, X and Nf. A
  height or width of 0 (set later by a DNL or LSE marker) cannot be checked and is refused;
- **RLE**: the segment count must be Samples per Pixel × bytes per sample, the offsets must
  lie inside the frame, and each segment must not decode to more than twice its share of
  Rows × Columns (pydicom's decoder inflates a segment whole, up to 64× its length, before it
  compares). The lengths are added up run by run without decoding; a bomb is refused after
  the first runs past that bound.

A frame whose header cannot be found is refused too: it would be decoded unchecked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes, RLELossless

from mammoseg.dicom.bounded import DicomReadError
from mammoseg.dicom.checks import ReadLimits

#: SOFn markers of ISO/IEC 10918-1 (0xC4 DHT, 0xC8 JPG and 0xCC DAC are not frame headers) and JPEG-LS SOF55.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
#: Markers without a length field (TEM, RSTn, SOI).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: A segment may decode to at most this many times its share (Rows × Columns bytes).
_RLE_SLACK = 2


@dataclass(frozen=True)
class FrameSize:
    """What a codestream header says its frame decodes to."""

    rows: int
    columns: int
    components: int
    codec: str


class CodestreamError(ValueError):
    """A frame whose header is missing, malformed or disagrees with the DICOM header (the reason)."""


def check_codestreams(ds: Dataset, path: Path, tsyntax: UID, limits: ReadLimits) -> None:
    """Refuse (DicomReadError, one line) a file any of whose frames' codestreams would decode to
    another size than the header's, or beyond `limits`, before anything is decoded."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        raise DicomReadError(f"{path}: no valid Rows, Columns, Bits Allocated or Number of Frames in the header") from None
    try:
        pixel_data = ds.PixelData
        for index, frame in zip(range(frames), generate_frames(pixel_data, number_of_frames=frames)):
            size = frame_size(frame, tsyntax, rows, columns, samples, bits)
            _compare(size, rows, columns, samples, limits, index if frames > 1 else None)
    except CodestreamError as exc:
        raise DicomReadError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation: items, offsets, lengths
        raise DicomReadError(f"{path}: cannot split the compressed pixel data into frames "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None


def _compare(size: FrameSize, rows: int, columns: int, samples: int, limits: ReadLimits, index: int | None) -> None:
    where = f"frame {index + 1}: " if index is not None else ""
    stream = f"{where}the {size.codec} codestream is {size.rows} × {size.columns} with {size.components} component(s)"
    if size.rows * size.columns > limits.max_pixels:
        raise CodestreamError(f"{stream}: {size.rows * size.columns / 1e6:.1f} Mpx exceeds the "
                              f"{limits.max_pixels / 1e6:g} Mpx limit; not decoded")
    if (size.rows, size.columns, size.components) != (rows, columns, samples):
        raise CodestreamError(f"{stream}, but the DICOM header says Rows × Columns {rows} × {columns} with "
                              f"{samples} sample(s) per pixel; not decoded")


def frame_size(frame: bytes, tsyntax: UID, rows: int, columns: int, samples: int, bits: int) -> FrameSize:
    """The size `frame` decodes to, from its codestream header (CodestreamError if it has none).

    `rows`, `columns`, `samples` and `bits` (allocated) are the DICOM header's: an RLE frame
    carries no size of its own, so its segments are checked against them.
    """
    if tsyntax in JPEG2000TransferSyntaxes:
        return _jpeg2000_size(frame)
    if tsyntax in JPEGTransferSyntaxes or tsyntax in JPEGLSTransferSyntaxes:
        return _jpeg_size(frame, "JPEG-LS" if tsyntax in JPEGLSTransferSyntaxes else "JPEG")
    if tsyntax == RLELossless:
        return _rle_size(frame, rows, columns, samples, bits)
    raise CodestreamError(f"the size of a {tsyntax.name} frame cannot be checked before decoding; "
                          "convert the file to an uncompressed, JPEG, JPEG-LS, JPEG 2000 or RLE transfer syntax")


def _jpeg2000_size(frame: bytes) -> FrameSize:
    """JPEG 2000 Part 1 A.5.1: SOC, then SIZ (Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz)."""
    start = _jp2_codestream_start(frame) if frame.startswith(_JP2_SIGNATURE) else 0
    header = frame[start : start + 42]
    if len(header) < 42 or header[:4] != b"\xff\x4f\xff\x51":
        raise CodestreamError("no JPEG 2000 SOC and SIZ markers at the start of the frame; not decoded")
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", header[8:24])
    (components,) = struct.unpack(">H", header[40:42])
    if xosiz >= xsiz or yosiz >= ysiz:
        raise CodestreamError(f"JPEG 2000 SIZ marker with an empty image area ({xsiz} × {ysiz} from offset "
                              f"{xosiz}, {yosiz}); not decoded")
    return FrameSize(ysiz - yosiz, xsiz - xosiz, components, "JPEG 2000")


def _jp2_codestream_start(frame: bytes) -> int:
    """Offset of the codestream in a JP2 file: the contents of its `jp2c` box."""
    offset = 0
    while offset + 8 <= len(frame):
        length, kind = struct.unpack(">I4s", frame[offset : offset + 8])
        if kind == b"jp2c":
            return offset + 8
        if length < 8:  # 0 (to the end) or 1 (64-bit length) before jp2c: not a layout encoders write
            break
        offset += length
    raise CodestreamError("JP2 file without a codestream (jp2c) box; not decoded")


def _jpeg_size(frame: bytes, codec: str) -> FrameSize:
    """ISO/IEC 10918-1 B.2.2 / 14495-1 C.2.2: walk the marker segments from SOI to the frame header."""
    if frame[:2] != b"\xff\xd8":
        raise CodestreamError(f"no {codec} SOI marker at the start of the frame; not decoded")
    offset = 2
    while offset + 4 <= len(frame):
        if frame[offset] != 0xFF:
            break
        marker = frame[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        if marker == 0xDA:  # a scan before any frame header
            break
        (length,) = struct.unpack(">H", frame[offset + 2 : offset + 4])
        if marker in _SOF_MARKERS and offset + 10 <= len(frame):
            height, width = struct.unpack(">HH", frame[offset + 5 : offset + 9])
            if height == 0 or width == 0:
                raise CodestreamError(f"{codec} frame header with a height or width of 0 (set by a later marker), "
                                      "which cannot be checked before decoding; not decoded")
            return FrameSize(height, width, frame[offset + 9], codec)
        if length < 2:
            break
        offset += 2 + length
    raise CodestreamError(f"no {codec} frame header (SOF marker) before the scan data; not decoded")


def _rle_size(frame: bytes, rows: int, columns: int, samples: int, bits: int) -> FrameSize:
    """DICOM PS3.5 G.4: the 64-byte RLE header, then segments that must fit the header's size."""
    if len(frame) < 64 or bits % 8:
        raise CodestreamError(f"RLE frame of {len(frame)} bytes with {bits} bits allocated has no valid RLE header")
    count, *offsets = struct.unpack("<16I", frame[:64])
    expected = samples * bits // 8
    if count != expected:
        raise CodestreamError(f"the RLE header has {count} segment(s), but {samples} sample(s) of {bits} bits "
                              f"need {expected}; not decoded")
    bounds = [*offsets[:count], len(frame)]
    if bounds[0] != 64 or any(b <= a for a, b in pairwise(bounds)):
        raise CodestreamError(f"RLE segment offsets {offsets[:count]} do not lie in order inside the "
                              f"{len(frame)}-byte frame; not decoded")
    share = rows * columns
    for number, (start, end) in enumerate(pairwise(bounds), start=1):
        decoded = _rle_decoded_length(memoryview(frame)[start:end], _RLE_SLACK * share)
        if decoded > _RLE_SLACK * share:
            raise CodestreamError(f"RLE segment {number} decodes to more than {_RLE_SLACK * share} bytes, "
                                  f"{_RLE_SLACK}× what Rows × Columns {rows} × {columns} need; not decoded")
    return FrameSize(rows, columns, samples, "RLE")


def _rle_decoded_length(segment: memoryview, stop_after: int) -> int:
    """Bytes a PackBits segment decodes to (counting runs, not decoding), or the first count past `stop_after`."""
    total, pos, end = 0, 0, len(segment)
    while pos < end and total <= stop_after:
        header = segment[pos]
        if header < 128:  # literal run of header + 1 bytes
            total += header + 1
            pos += header + 2
        elif header > 128:  # the next byte repeated 257 - header times
            total += 257 - header
            pos += 2
        else:
            pos += 1
    return total
