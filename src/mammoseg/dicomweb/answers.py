"""What a DICOMweb server's answers must be before mammoseg uses them, checked without trusting the server.

Why: a misconfigured or hostile server answers with a login page, JSON of another shape, a
part that is not DICOM, bytes after the data set, or a body that never ends. Each must become
`BadAnswer`, whose one-line message says what came instead, never a traceback from deep in a
parser, and an instance must stream to disk rather than sit in memory:

- `dicom_json(response)`: a QIDO-RS or metadata answer is DICOM JSON, a list of data sets
  whose attributes are `{"vr": ..., "Value": [...]}` objects under 8-hex-digit tags;
- `FirstPart`: the first part of a multipart/related answer (WADO-RS), split from the body as
  it streams (RFC 2046) and written to a file, so a 100 MB mammogram never sits in memory;
- `check_part10(path, sop_uid)`: that part is a DICOM file (the DICM prefix, nothing but
  DICOM after the pixel data) of the instance that was asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, BinaryIO

from mammoseg.dicom.bounded import read_dicom

#: Longest preamble and part header block accepted before the part's content.
_MAX_HEAD_BYTES = 64 * 1024
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


class BadAnswer(ValueError):
    """An answer that is not what DICOMweb specifies; the message says what came instead."""


def one_line(text: object) -> str:
    """`text` with its whitespace runs (newlines too) folded into single spaces: errors are one line."""
    return " ".join(str(text).split())


def content_type(response: Any) -> Message:
    """The answer's Content-Type as an email Message (`get_content_type()`, `get_param()`); '' when absent."""
    message = Message()
    message["Content-Type"] = response.headers.get("Content-Type", "")
    return message


def media_type(response: Any) -> str:
    """'type/subtype' of the answer in lower case, or '' when the server sent no Content-Type."""
    return content_type(response).get_content_type() if response.headers.get("Content-Type") else ""


def _not_expected(kind: str, expected: str) -> BadAnswer:
    if kind == "text/html":
        return BadAnswer(f"answered with an HTML page (text/html), not {expected}: is this the DICOMweb root? "
                         "a login page?")
    return BadAnswer(f"answered with {kind}, not {expected}")


def dicom_json(response: Any) -> list[dict[str, Any]]:
    """The data sets of a QIDO-RS or metadata answer; BadAnswer unless it is DICOM JSON (module docstring)."""
    kind = media_type(response)
    if kind and not (kind.endswith("/json") or kind.endswith("+json")):
        raise _not_expected(kind, "DICOM JSON")
    if response.status_code == 204 or not response.content.strip():
        return []  # no match: some servers send an empty body
    try:
        value = json.loads(response.content)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, nesting too deep
        raise BadAnswer(f"answered with {kind or 'a body'} that is not valid JSON ({one_line(exc)})") from None
    if isinstance(value, dict):
        value = [value]  # a single data set where a list is due: some servers do so
    if not isinstance(value, list):
        raise BadAnswer(f"answered with JSON that is not a list of DICOM data sets (a {type(value).__name__})")
    for index, data_set in enumerate(value):
        _check_data_set(data_set, index)
    return value


def _check_data_set(data_set: object, index: int) -> None:
    if not isinstance(data_set, dict):
        raise BadAnswer(f"answered with JSON that is not DICOM JSON: result {index + 1} is a "
                        f"{type(data_set).__name__}, not a data set")
    for tag, attribute in data_set.items():
        values = attribute.get("Value", []) if isinstance(attribute, dict) else None
        if not _TAG.match(str(tag)) or not isinstance(values, list):
            raise BadAnswer(f"answered with JSON that is not DICOM JSON: result {index + 1} has "
                            f"{one_line(repr(tag))[:40]}: {one_line(repr(attribute))[:60]}")


def json_value(data_set: Mapping[str, Any], tag: str) -> str:
    """The first value of `tag` in a DICOM JSON data set checked by `dicom_json`, as text ('' when absent)."""
    values = data_set.get(tag, {}).get("Value") or [""]
    return "" if values[0] is None else str(values[0])


def multipart_boundary(response: Any, part_type: str = "application/dicom") -> str | None:
    """The boundary of a multipart/related answer of `part_type` parts; None for a bare `part_type` body.

    Anything else (an HTML page, JSON, another type) is a BadAnswer."""
    header = content_type(response)
    kind = media_type(response)
    if kind == part_type:
        return None
    if kind != "multipart/related":
        raise _not_expected(kind or "no Content-Type", f"multipart/related DICOM ({part_type})")
    declared = (header.get_param("type") or part_type).lower()
    boundary = header.get_param("boundary")
    if declared != part_type:
        raise BadAnswer(f"answered with multipart/related parts of type {declared}, not {part_type}")
    if not boundary or not isinstance(boundary, str):
        raise BadAnswer("answered with multipart/related without a boundary")
    return boundary


class FirstPart:
    """The content of the first part of a multipart body, written to `sink` as the body streams in.

    Why not email.parser: it holds the whole message in memory. The body is fed chunk by chunk:
    the first delimiter line (`--boundary`) is found, then the part's headers (parsed by
    email.parser; a part of another type than `part_type` is refused), then the content is
    copied until the next delimiter (CRLF `--boundary`), looked for across chunk borders.
    What follows the first part (more parts, the epilogue) is not needed: `feed` returns True
    once the part is complete, and the caller stops reading.
    """

    def __init__(self, boundary: str, sink: BinaryIO, part_type: str = "application/dicom") -> None:
        self._dash = b"--" + boundary.encode("ascii", "replace")
        self._delimiter = b"\r\n" + self._dash
        self._sink, self._part_type = sink, part_type
        self._buffer = b""
        self._state = "preamble"

    def feed(self, chunk: bytes) -> bool:
        """Take the next bytes of the body; True once the first part has been written whole."""
        self._buffer += chunk
        if self._state == "preamble":
            self._skip_preamble()
        if self._state == "headers":
            self._read_headers()
        if self._state == "content":
            self._copy_content()
        return self._state == "done"

    def close(self) -> None:
        """The body ended: a BadAnswer unless the first part was complete."""
        if self._state == "done":
            return
        where = {"preamble": "before any multipart boundary", "headers": "inside the part's headers",
                 "content": "before the end of its part (no boundary after it): a truncated answer"}[self._state]
        raise BadAnswer(f"the multipart answer ended {where}")

    def _skip_preamble(self) -> None:
        if self._buffer.startswith(self._dash):
            start = 0
        else:
            found = self._buffer.find(self._delimiter)
            start = found + 2 if found >= 0 else -1
        line_end = self._buffer.find(b"\r\n", start + len(self._dash)) if start >= 0 else -1
        if line_end < 0:
            self._check_head("no multipart boundary")
            return
        rest = self._buffer[start + len(self._dash):line_end]
        if rest.startswith(b"--"):
            raise BadAnswer("the multipart answer holds no part")
        if rest.strip(b" \t"):
            raise BadAnswer("the multipart boundary line is followed by other text")
        self._buffer = self._buffer[line_end + 2:]
        self._state = "headers"

    def _read_headers(self) -> None:
        if self._buffer.startswith(b"\r\n"):
            block, end = b"", 2
        else:
            found = self._buffer.find(b"\r\n\r\n")
            if found < 0:
                self._check_head("part headers without an end")
                return
            block, end = self._buffer[:found], found + 4
        headers = BytesHeaderParser().parsebytes(block)
        if headers["Content-Type"] is not None and headers.get_content_type() != self._part_type:
            raise BadAnswer(f"answered with a part of type {headers.get_content_type()}, not {self._part_type}")
        self._buffer = self._buffer[end:]
        self._state = "content"

    def _copy_content(self) -> None:
        found = self._buffer.find(self._delimiter)
        if found >= 0:
            self._sink.write(self._buffer[:found])
            self._buffer, self._state = b"", "done"
            return
        keep = len(self._delimiter) - 1  # the start of a delimiter cut by the chunk border
        if len(self._buffer) > keep:
            self._sink.write(self._buffer[:-keep])
            self._buffer = self._buffer[-keep:]

    def _check_head(self, what: str) -> None:
        if len(self._buffer) > _MAX_HEAD_BYTES:
            raise BadAnswer(f"the multipart answer has {what} in its first {_MAX_HEAD_BYTES // 1024} KiB")


#: Data element values larger than this are not read by `check_part10` (the pixel data is the reader's job).
_DEFER_BYTES = 64 * 1024
_PIXEL_DATA = 0x7FE00010
#: What may follow the pixel data: Digital Signatures Sequence, Data Set Trailing Padding.
_AFTER_PIXEL_DATA = (0xFFFAFFFA, 0xFFFCFFFC)


def check_part10(path: str | Path, sop_uid: str) -> None:
    """A BadAnswer unless `path` is a DICOM file (Part 10) of the instance `sop_uid`, parsed to its end.

    Bytes appended after the data set are read by pydicom as more data elements: elements after
    the pixel data (other than signatures and trailing padding) or from the command group 0000
    give them away.
    """
    try:
        ds = read_dicom(path, defer_size=_DEFER_BYTES)
    except Exception as exc:  # whatever the parser meets in bytes the server chose
        reason = one_line(exc).removeprefix(f"{path}: ")  # the cache's temp file means nothing to a user
        raise BadAnswer(reason[:200] if reason.startswith("not a DICOM file") else
                        f"not a DICOM file ({reason[:200]})") from None
    tags = list(ds.keys())  # in the order read from the file
    command = next((tag for tag in tags if tag.group == 0), None)
    if command is not None:
        raise BadAnswer(f"not a DICOM file: command element {command} in the data set, so bytes that are not "
                        "DICOM follow it")
    after = tags[tags.index(_PIXEL_DATA) + 1:] if _PIXEL_DATA in tags else []
    if after and (any(tag not in _AFTER_PIXEL_DATA for tag in after) or after != sorted(after)):
        raise BadAnswer(f"not a DICOM file: element {after[0]} after the pixel data, so bytes that are not DICOM "
                        "follow the data set")
    found = str(ds.get("SOPInstanceUID", ""))
    if found != sop_uid:
        raise BadAnswer(f"the server sent instance {found or '(no SOP Instance UID)'}, not the one asked for")
