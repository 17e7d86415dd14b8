"""Misbehaving DICOMweb servers for tests: a small http.server on 127.0.0.1 that serves one study
well, except where a test tells it to misbehave.

`DicomWebServer(study)` answers QIDO-RS (`/studies`, `/studies/<uid>/instances`, with
limit/offset) and WADO-RS (`/studies/<st>/series/<se>/instances/<sop>`, one multipart/related
DICOM part) like a well-behaved archive. `server.studies`, `server.instances` (QIDO) and
`server.wado[sop]` (one instance's retrieval) and `server.stow` (STOW-RS, which
otherwise answers 501) take a behaviour instead: a function
`(handler) -> None` that writes the whole answer. The behaviours below are what broken or
hostile servers were seen to do: HTML login pages, malformed JSON, pages that never end,
parts that are not DICOM, bytes after the data set, bodies of hundreds of MB, answers sent
one byte at a time. Each runs in its own daemon thread and stops when the client hangs up
or the server stops; `server.log` lists the paths asked for, `server.sent[sop]` how many
bytes a streaming behaviour sent, and `server.ended` which streaming behaviours have ended.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import numpy as np
from pydicom.uid import generate_uid

from dicom_factory import mg_dataset

Behaviour = Callable[[http.server.BaseHTTPRequestHandler], None]
BOUNDARY = "mammoseg-test-boundary"
MIB = 2**20


@dataclass(frozen=True)
class Instance:
    """One instance the server holds: its UIDs, what QIDO says it is, and its DICOM file's bytes."""

    study: str
    series: str
    sop: str
    data: bytes
    sop_class: str = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation
    modality: str = "MG"

    def qido(self) -> dict:
        return {"0020000D": {"vr": "UI", "Value": [self.study]}, "0020000E": {"vr": "UI", "Value": [self.series]},
                "00080018": {"vr": "UI", "Value": [self.sop]}, "00080016": {"vr": "UI", "Value": [self.sop_class]},
                "00080060": {"vr": "CS", "Value": [self.modality]}}


def mammogram(study: str, series: str, seed: int, shape: tuple[int, int] = (96, 80)) -> Instance:
    """A small For Presentation MG (a bright breast on the left, noise) as a DICOM file's bytes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(100, 300, shape).astype(np.uint16)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    pixels[((rows - shape[0] / 2) / (shape[0] / 2.2)) ** 2 + (cols / (shape[1] * 0.8)) ** 2 < 1] += 2500
    ds = mg_dataset(pixels, bits_stored=12, StudyInstanceUID=study, SeriesInstanceUID=series, PatientID=f"HOSTILE{seed}",
                    PatientName=f"Phantom^{seed}", WindowCenter=1800, WindowWidth=3600, ImageLaterality="L",
                    ViewPosition="CC")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Instance(study, series, str(ds.SOPInstanceUID), buffer.getvalue())


def make_study(n: int, seed: int = 0) -> list[Instance]:
    """`n` mammograms of one new study, one series."""
    study, series = generate_uid(), generate_uid()
    return [mammogram(study, series, seed + k) for k in range(n)]


def multipart(part: bytes, part_type: str = "application/dicom") -> bytes:
    """A multipart/related body with one part (what WADO-RS sends for one instance)."""
    return (f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + f"\r\n--{BOUNDARY}--\r\n".encode())


MULTIPART_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def send(handler: http.server.BaseHTTPRequestHandler, body: bytes, content_type: str, status: int = 200) -> None:
    """A whole answer with its Content-Length."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def query(handler: http.server.BaseHTTPRequestHandler) -> dict[str, list[str]]:
    return parse_qs(urlsplit(handler.path).query)


def page(handler: http.server.BaseHTTPRequestHandler, results: list[dict]) -> list[dict]:
    """The slice of `results` the request's limit/offset ask for."""
    asked = query(handler)
    offset = int(asked.get("offset", ["0"])[0])
    limit = int(asked.get("limit", [str(len(results))])[0])
    return results[offset: offset + limit]


# --- what misbehaving servers were seen to do ------------------------------------------------

def html_login_page(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A single sign-on portal answering every URL with its login form."""
    send(handler, b"<!DOCTYPE html><html><body><form action='/login'>User <input name=u></form></body></html>",
         "text/html; charset=utf-8")


def malformed_qido(handler: http.server.BaseHTTPRequestHandler) -> None:
    """JSON, but attributes as bare strings rather than DICOM JSON objects."""
    send(handler, json.dumps([{"0020000D": "1.2.3", "00080018": "1.2.3.4"}]).encode(), "application/dicom+json")


def endless_pages(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Every QIDO page full of instances never seen before: paging never ends on its own."""
    asked = query(handler)
    limit, offset = int(asked.get("limit", ["1000"])[0]), int(asked.get("offset", ["0"])[0])
    study = urlsplit(handler.path).path.split("/")[-2]
    results = [Instance(study, "1.2.3.4", f"2.25.{offset + k + 1}", b"").qido() for k in range(limit)]
    send(handler, json.dumps(results).encode(), "application/dicom+json")


def repeated_page(handler: http.server.BaseHTTPRequestHandler) -> None:
    """The same full page whatever the offset (a server that ignores it)."""
    limit = int(query(handler).get("limit", ["1000"])[0])
    study = urlsplit(handler.path).path.split("/")[-2]
    results = [Instance(study, "1.2.3.4", f"1.2.3.4.{k + 1}", b"").qido() for k in range(limit)]
    send(handler, json.dumps(results).encode(), "application/dicom+json")


def non_dicom_part(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A well-formed multipart answer whose application/dicom part holds text."""
    send(handler, multipart(b"ERROR: instance offline, try again later\n" * 4), MULTIPART_TYPE)


def wrong_content_type(handler: http.server.BaseHTTPRequestHandler) -> None:
    """JSON where a multipart DICOM answer is due."""
    send(handler, b'{"error": "transcoding failed"}', "application/json")


def trailing_garbage(instance: Instance) -> Behaviour:
    """The instance, with bytes appended to its data set inside the part."""
    def behaviour(handler: http.server.BaseHTTPRequestHandler) -> None:
        send(handler, multipart(instance.data + b"\x00\x00\xee\xee<garbage after the data set>"), MULTIPART_TYPE)
    return behaviour


def truncated(instance: Instance) -> Behaviour:
    """The first half of the answer, then the connection closes."""
    def behaviour(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = multipart(instance.data)
        handler.send_response(200)
        handler.send_header("Content-Type", MULTIPART_TYPE)
        handler.end_headers()  # no Content-Length: the end of the connection ends the body
        handler.wfile.write(body[: len(body) // 2])
    return behaviour


@dataclass
class DicomWebServer:
    """A DICOMweb server on 127.0.0.1 that serves `study` (module docstring). Use as a context manager."""

    study: list[Instance]
    studies: Behaviour | None = None
    instances: Behaviour | None = None
    wado: dict[str, Behaviour] = field(default_factory=dict)
    stow: Behaviour | None = None
    log: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/dicom-web"

    def instance_url(self, instance: Instance) -> str:
        return f"{self.url}/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}"

    def __enter__(self) -> DicomWebServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def trickle(self, sop: str, total: int = 100_000, interval: float = 0.25, headers: bool = False) -> Behaviour:
        """An answer of `total` bytes sent one byte every `interval` s (the status line and headers too,
        with `headers`); `sent[sop]` counts the bytes that went out before the client hung up."""
        def behaviour(handler: http.server.BaseHTTPRequestHandler) -> None:
            head = f"HTTP/1.0 200 OK\r\nContent-Type: {MULTIPART_TYPE}\r\nContent-Length: {total}\r\n\r\n".encode()
            if not headers:
                handler.wfile.write(head)
                handler.wfile.flush()
            stream = (head if headers else b"") + f"--{BOUNDARY}\r\n\r\n".encode() + b"\0" * total
            self.sent[sop] = 0
            try:
                for byte in stream:
                    if self.stopping.wait(interval):
                        return
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                    self.sent[sop] += 1
            finally:
                self.ended.add(sop)
        return behaviour

    def huge(self, sop: str, size: int) -> Behaviour:
        """A multipart answer of `size` bytes (zeros after the part header), made as it is sent."""
        def behaviour(handler: http.server.BaseHTTPRequestHandler) -> None:
            head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            handler.send_response(200)
            handler.send_header("Content-Type", MULTIPART_TYPE)
            handler.send_header("Content-Length", str(size))
            handler.end_headers()
            handler.wfile.write(head)
            chunk, self.sent[sop] = bytes(MIB), len(head)
            try:
                while self.sent[sop] < size and not self.stopping.is_set():
                    piece = chunk[: size - self.sent[sop]]
                    handler.wfile.write(piece)
                    self.sent[sop] += len(piece)
            finally:
                self.ended.add(sop)
        return behaviour

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        self.log.append(handler.path)
        parts = path.removeprefix("/dicom-web/").split("/")
        by_sop = {instance.sop: instance for instance in self.study}
        if parts == ["studies"]:
            return (self.studies or self._studies)(handler)
        if len(parts) == 3 and parts[2] == "instances":
            return (self.instances or self._instances)(handler)
        if len(parts) == 6 and parts[5] in by_sop:
            return self.wado.get(parts[5], self._retrieve)(handler)
        send(handler, b"not found", "text/plain", status=404)

    def _studies(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        uids = sorted({instance.study for instance in self.study})
        results = [{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in uids]
        send(handler, json.dumps(page(handler, results)).encode(), "application/dicom+json")

    def _instances(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        study = urlsplit(handler.path).path.split("/")[-2]
        results = [instance.qido() for instance in self.study if instance.study == study]
        send(handler, json.dumps(page(handler, results)).encode(), "application/dicom+json")

    def _retrieve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        sop = urlsplit(handler.path).path.rsplit("/", 1)[-1]
        instance = next(i for i in self.study if i.sop == sop)
        send(handler, multipart(instance.data), MULTIPART_TYPE)


def _handler_for(server: DicomWebServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            try:
                server._answer(self)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up: what a bounded client does to a hostile server

        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            server.log.append(f"POST {self.path}")
            try:
                if server.stow is None:
                    send(self, b"STOW-RS not supported", "text/plain", status=501)
                else:
                    server.stow(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll `condition` for up to `seconds` (a server thread noticing its client is gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
