"""Sending a DICOM node's results (SEG, SR) to another node with C-STORE, retried, one journal line per send.

Why: a hospital takes an AI node's results back over the DICOM network protocol, into its PACS or
router. A destination that is down for a minute must not lose results, and a restarted node must
neither lose nor repeat a send: each object's outcome (`sent`, or `failed` after the last retry) is
a line of the node's journal, and on start every object whose latest line is not `sent` is sent again.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mammoseg.dicom.bounded import read_dicom

log = logging.getLogger(__name__)

#: An AE title: 1-16 characters of the default repertoire, no backslash, not only spaces.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_DESTINATION = re.compile(r"^(?P<ae>[^@]+)@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


def ae_title(text: str) -> str:
    """A checked AE title (1-16 printable characters, no backslash), as given."""
    value = text.strip()
    if not value or not _AE_TITLE.match(value):
        raise ValueError(f"{text!r} is not an AE title: 1-16 printable characters without a backslash")
    return value


@dataclass(frozen=True)
class Destination:
    """The node results are sent to: `AE@host:port`."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        match = _DESTINATION.match(text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"{text!r}: expected AE@host:port, e.g. PACS@pacs.example.org:104")
        return cls(ae_title(match["ae"]), match["host"], int(match["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often a send is tried and how long to wait between tries (doubling, capped)."""

    attempts: int = 5
    first_wait: float = 1.0
    max_wait: float = 30.0

    def waits(self) -> list[float]:
        return [min(self.first_wait * 2**i, self.max_wait) for i in range(max(self.attempts - 1, 0))]


def require_pynetdicom() -> Any:
    """Import pynetdicom, or explain how to install the optional extra."""
    try:
        import pynetdicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the DICOM node needs pynetdicom: pip install 'mammoseg[node]'") from exc
    return pynetdicom


def store_once(path: Path, destination: Destination, calling_ae: str, timeout: float = 30.0) -> None:
    """One C-STORE association sending the DICOM file at `path`; raises with the reason when not stored."""
    dataset = read_dicom(path)
    ae = require_pynetdicom().AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    # The file's own transfer syntax first; the uncompressed ones too, which every node accepts.
    syntaxes = dict.fromkeys([str(dataset.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(dataset.SOPClassUID, list(syntaxes))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise ConnectionError(f"{destination}: association not established (rejected, aborted or unreachable)")
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warnings: the object is stored
        raise RuntimeError(f"{destination}: C-STORE answered status 0x{code & 0xFFFF:04X}" if code >= 0
                           else f"{destination}: no C-STORE answer (timeout or aborted association)")


class Forwarder:
    """A thread that sends queued (source UID, kind, path) objects, retrying, and journals each outcome."""

    def __init__(self, destination: Destination, calling_ae: str, record: Callable[[dict[str, Any]], None],
                 retry: RetryPolicy = RetryPolicy()) -> None:
        self.destination, self.calling_ae, self.record, self.retry = destination, calling_ae, record, retry
        self.pending: queue.Queue[tuple[str, str, Path] | None] = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mammoseg-forward", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, uid: str, kind: str, path: Path) -> None:
        self.pending.put((uid, kind, path))

    def close(self) -> None:
        """Send what is queued (without waiting out back-off after a stop), then end the thread."""
        self.pending.put(None)
        self.thread.join()

    def _loop(self) -> None:
        while (item := self.pending.get()) is not None:
            uid, kind, path = item
            reason = self._send(path)
            entry = {"uid": uid, "object": kind, "file": str(path), "destination": str(self.destination),
                     "event": "sent" if reason is None else "failed"}
            if reason is not None:
                entry["reason"] = reason
                log.warning("%s: not sent to %s: %s", path, self.destination, reason)
            self.record(entry)

    def _send(self, path: Path) -> str | None:
        """None once stored; else the last attempt's reason."""
        reason = "not tried"
        for wait in [*self.retry.waits(), None]:
            try:
                store_once(path, self.destination, self.calling_ae)
                return None
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then journaled with its reason
                reason = " ".join(str(exc).split()) or type(exc).__name__
            if wait is None or self.stopping.wait(wait):
                break
        return reason
