"""A DICOM node: mammograms pushed with C-STORE are segmented; the SEG and SR go back with C-STORE.

Why: hospitals route images to an AI node by AE title and take its results back the same way; no
folder or DICOMweb server is in between. The node (`mammoseg listen`, docs/dicom.md "DICOM node"):

- answers C-ECHO and C-STORE on one port, bound to one address; calling AE titles may be restricted;
- checks each received object's header as `predict` does (`dicom.checks.check_header`): a refused
  object gets a failure status and a line in `errors.csv`; an accepted one is written to
  `received/<SOP Instance UID>.dcm` before the success status is sent, so nothing acknowledged is lost;
- hands the UID to one prediction thread through a bounded queue: when it is full the C-STORE
  answer waits (back-pressure on the sender) instead of filling memory;
- predicts with the fold ensemble loaded once (`Segmenter`), writing `masks/`, `seg/` and `sr/` as
  `predict --dicom-seg --dicom-sr` does, and journals each image in `.listen-done.jsonl`;
- with a destination, sends SEG and SR there (`inference.forward`), journaling each send.

On start the journal is read: received images without a `predicted` line are predicted, and objects
whose latest send line is not `sent` are sent again, so a killed node restarted loses and repeats nothing.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from mammoseg.dicom.bounded import read_dicom
from mammoseg.dicom.checks import HeaderError, ReadLimits, check_header
from mammoseg.inference.forward import Destination, Forwarder, RetryPolicy, require_pynetdicom
from mammoseg.inference.outputs import write_dicom_objects
from mammoseg.inference.run_identity import run_identity
from mammoseg.inference.segmenter import Segmenter
from mammoseg.io import atomic_path, read_csv, write_csv_atomic, write_png
from mammoseg.journals import Journal, journal_lines
from mammoseg.layouts import PredictionLayout

log = logging.getLogger(__name__)
# pynetdicom logs every association and message at INFO; the node logs what matters itself (-v shows it all).
if logging.getLogger("pynetdicom").level == logging.NOTSET:
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)

JOURNAL = ".listen-done.jsonl"
RECEIVED = "received"
ERROR_COLUMNS = ("input", "reason")
#: Failure statuses of a refused C-STORE: "cannot understand" (not a mammogram), "out of resources".
STATUS_REFUSED, STATUS_OUT_OF_RESOURCES = 0xC000, 0xA700
#: The objects sent to the destination, in this order (the SR references the SEG).
FORWARDED = ("seg", "sr")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class NodeSettings:
    """Where the node listens, whom it accepts, where it writes and sends."""

    out: Path
    ae_title: str = "MAMMOSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed: tuple[str, ...] = ()  # calling AE titles accepted; empty: any
    destination: Destination | None = None
    queue_size: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def listen_outputs() -> tuple[str, ...]:
    """The entries a node writes into its folder (what `listen --overwrite` removes)."""
    layout = PredictionLayout(".")
    return (layout.masks.name, layout.seg("x").parent.name, layout.sr("x").parent.name, layout.errors.name,
            RECEIVED, JOURNAL)


@dataclass
class JournalState:
    """What the journal says: images predicted or failed, and the latest send outcome of each object."""

    done: set[str] = field(default_factory=set)  # predicted, or failed for good
    predicted: set[str] = field(default_factory=set)
    sends: dict[tuple[str, str], str] = field(default_factory=dict)

    def unsent(self) -> list[tuple[str, str]]:
        """(uid, "seg" | "sr") of every predicted image whose object's latest send is not `sent`."""
        return [(uid, kind) for uid in sorted(self.predicted) for kind in FORWARDED
                if self.sends.get((uid, kind)) != "sent"]

    @classmethod
    def read(cls, path: Path) -> JournalState:
        state = cls()
        for entry in journal_lines(path) if path.is_file() else ():
            if entry.get("event") in ("predicted", "failed") and "object" not in entry:
                state.done.add(str(entry.get("uid")))
                if entry.get("event") == "predicted":
                    state.predicted.add(str(entry.get("uid")))
            elif "object" in entry:
                state.sends[(str(entry.get("uid")), str(entry.get("object")))] = str(entry.get("event"))
        return state


class Node:
    """The SCP handlers, the prediction worker and the forwarder of one node folder."""

    def __init__(self, settings: NodeSettings, segmenter: Segmenter, run: Path) -> None:
        self.settings, self.segmenter = settings, segmenter
        self.layout = PredictionLayout(settings.out)
        self.received = settings.out / RECEIVED
        self.identity = run_identity(run, segmenter.threshold)
        self.lock = threading.Lock()
        settings.out.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(settings.out / JOURNAL)
        self.state = JournalState.read(settings.out / JOURNAL)
        self._forget_missing_outputs()
        self.errors = read_csv(self.layout.errors) if self.layout.errors.is_file() else []
        self.waiting: queue.Queue[str | None] = queue.Queue(maxsize=settings.queue_size)
        self.queued: set[str] = set()
        self.worker = threading.Thread(target=self._work, name="mammoseg-predict", daemon=True)
        self.forwarder = (Forwarder(settings.destination, settings.ae_title, self._record, settings.retry)
                          if settings.destination else None)
        for folder in (self.layout.masks, self.layout.seg("x").parent, self.layout.sr("x").parent, self.received):
            folder.mkdir(parents=True, exist_ok=True)

    # -- bookkeeping -------------------------------------------------------------------------------

    def _forget_missing_outputs(self) -> None:
        """An image counts as predicted when the journal says so and its mask and SEG are still there."""
        for uid in sorted(self.state.predicted):
            if not (self.layout.mask(uid).is_file() and self.layout.seg(uid).is_file()):
                log.info("%s: journaled as predicted but its mask or SEG is gone: predicted again", uid)
                self.state.predicted.discard(uid)
                self.state.done.discard(uid)

    def _record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.journal.add(entry)
            if "object" in entry:
                self.state.sends[(entry["uid"], entry["object"])] = entry["event"]
            else:
                self.state.done.add(entry["uid"])
                if entry["event"] == "predicted":
                    self.state.predicted.add(entry["uid"])

    def _error(self, name: str, reason: str) -> None:
        log.warning("%s: %s", name, reason)
        with self.lock:
            self.errors.append({"input": name, "reason": reason})
            write_csv_atomic(self.layout.errors, self.errors, ERROR_COLUMNS)

    # -- start and stop ----------------------------------------------------------------------------

    def start(self) -> int:
        """Start the worker (and forwarder) and queue what an earlier run left; returns how many resumed."""
        self.worker.start()
        resumed = 0
        if self.forwarder:
            self.forwarder.start()
            for uid, kind in self.state.unsent():
                self.forwarder.put(uid, kind, self._object_path(uid, kind))
                resumed += 1
        for path in sorted(self.received.glob("*.dcm")):
            if path.stem not in self.state.done and _UID.match(path.stem):
                self._enqueue(path.stem)
                resumed += 1
        return resumed

    def stop(self) -> None:
        """Finish the images queued and in flight, then the sends (without back-off waits)."""
        self.waiting.put(None)
        self.worker.join()
        if self.forwarder:
            self.forwarder.stopping.set()
            self.forwarder.close()
        self.journal.close()

    def _object_path(self, uid: str, kind: str) -> Path:
        return self.layout.seg(uid) if kind == "seg" else self.layout.sr(uid)

    def _enqueue(self, uid: str) -> None:
        with self.lock:
            if uid in self.queued or uid in self.state.done:
                return
            self.queued.add(uid)
        self.waiting.put(uid)  # blocks while the queue is full: back-pressure on the sender

    # -- C-STORE -----------------------------------------------------------------------------------

    def handle_store(self, event: Any) -> int:
        """pynetdicom's EVT_C_STORE handler: check, keep, queue; the status code."""
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
        except Exception as exc:  # noqa: BLE001 - an undecodable data set is refused, the association goes on
            self._error(f"from {calling}", f"data set could not be decoded: {exc}")
            return STATUS_REFUSED
        uid = str(dataset.get("SOPInstanceUID", "")).strip()
        name = f"{uid or '(no SOP Instance UID)'} from {calling}"
        reason = _refusal(dataset, uid)
        if reason:
            self._error(name, reason)
            return STATUS_REFUSED
        try:
            self._keep(dataset, uid)
        except OSError as exc:
            self._error(name, f"could not be written: {exc}")
            return STATUS_OUT_OF_RESOURCES
        self._enqueue(uid)
        return 0x0000

    def _keep(self, dataset: Dataset, uid: str) -> None:
        path = self.received / f"{uid}.dcm"
        if path.is_file():  # sent again (a retry after a restart): the first copy stands
            return
        with atomic_path(path, durable=True) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)

    # -- prediction --------------------------------------------------------------------------------

    def _work(self) -> None:
        while (uid := self.waiting.get()) is not None:
            try:
                self._predict(uid)
            except Exception as exc:  # noqa: BLE001 - one bad image never stops the node
                reason = " ".join(str(exc).split()) or type(exc).__name__
                self._error(str(self.received / f"{uid}.dcm"), reason)
                self._record({"uid": uid, "event": "failed", "reason": reason})
            with self.lock:
                self.queued.discard(uid)

    def _predict(self, uid: str) -> None:
        path = self.received / f"{uid}.dcm"
        result = self.segmenter.segment(path)
        source = read_dicom(path, stop_before_pixels=True)
        write_png(self.layout.mask(uid), result.mask)
        write_dicom_objects(source, result.mask, result.probability, (self.layout.seg(uid), self.layout.sr(uid)),
                            self.identity)
        self._record({"uid": uid, "event": "predicted", "mask": str(self.layout.mask(uid)),
                      "seg": str(self.layout.seg(uid)), "sr": str(self.layout.sr(uid)),
                      "mass": bool(result.mask.any())})
        log.info("%s: predicted%s", uid, " (mass found)" if result.mask.any() else "")
        if self.forwarder:
            for kind in FORWARDED:
                self.forwarder.put(uid, kind, self._object_path(uid, kind))


def _refusal(dataset: Dataset, uid: str) -> str | None:
    """Why a received object is not taken, or None: the reader's header checks, and a usable UID."""
    if not _UID.match(uid) or len(uid) > 64:
        return f"SOP Instance UID {uid!r} is not a UID (digits and dots, at most 64 characters)"
    try:
        check_header(dataset, ReadLimits())
    except HeaderError as exc:
        return str(exc)
    return None


def start_server(node: Node) -> Any:
    """The listening SCP (pynetdicom's threaded server) on the settings' address: C-ECHO and C-STORE of
    every storage class, so an object of the wrong kind gets a failure status with its reason rather
    than a refused association. Calling AE titles outside `allowed` are rejected at association."""
    require_pynetdicom()
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    settings = node.settings
    ae = AE(ae_title=settings.ae_title)
    ae.supported_contexts = StoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    if settings.allowed:
        ae.require_calling_aet = list(settings.allowed)
    handlers = [(evt.EVT_C_STORE, node.handle_store), (evt.EVT_C_ECHO, lambda event: 0x0000)]
    try:
        return ae.start_server((settings.host, settings.port), block=False, evt_handlers=handlers)
    except OSError as exc:
        raise ValueError(f"{settings.host}:{settings.port}: cannot listen there: {exc.strerror or exc} "
                         "(another program on that port? choose another --port)") from None
