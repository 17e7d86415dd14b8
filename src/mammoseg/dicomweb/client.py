"""A small DICOMweb client: find, fetch and classify mammograms on a server, store SEGs and SRs back.

Why: a research group's images live in a PACS or archive (Orthanc, dcm4chee, a cloud DICOM
store), not in folders. This module is what `predict --dicomweb` and `prepare --format
dicomweb` use to talk to one, over the standard QIDO-RS (search), WADO-RS (retrieve) and
STOW-RS (store) services, through the well-kept `dicomweb-client`.

Rules it keeps (the first three in `mammoseg.dicomweb.session`):
- **Credentials** never come from the command line: `MAMMOSEG_DICOMWEB_TOKEN` (a bearer
  token), or `MAMMOSEG_DICOMWEB_USER` + `MAMMOSEG_DICOMWEB_PASSWORD`, or a netrc file (the
  one given, else `~/.netrc`) with an entry for the server's host. A URL with a user or
  password in it is refused.
- **TLS** is verified; `ca_bundle` adds the CAs of a PEM file to the trusted ones.
- **Timeouts** on every request; **retries** with exponential back-off (urllib3 `Retry`) on
  connection errors, read errors and HTTP 429/500/502/503/504, honouring Retry-After.
- **Limits** (`mammoseg.dicomweb.limits`): each attempt of a request must bring its whole
  answer within a deadline; answers read into memory are capped, instances stream to disk
  under their own cap; a search stops with an error past `max_instances` results or when a
  page repeats results already received.
- **Answers are checked** (`mammoseg.dicomweb.answers`): QIDO and metadata answers must be DICOM
  JSON, WADO-RS answers a multipart/related DICOM part that is a DICOM file of the instance
  asked for; a STOW-RS answer must list the stored instance in its Referenced SOP Sequence.
  QIDO, WADO-RS and metadata requests go through the requests session directly
  (dicomweb-client reads whole answers into memory and trusts their shape); STOW-RS goes
  through dicomweb-client, on the same session and limits.
- **Errors** are `DicomWebError`, one line naming the server (or the instance's WADO-RS URL)
  and the reason. Fetching many instances reports each failure, whatever it is, and goes on
  with the rest; only failures of the server as a whole (authentication, connection, TLS)
  stop the run.
- Retrieved instances go to a cache folder as `<study>/<series>/<sop>.dcm`, written
  atomically as received; a SOP instance never changes, so a cached file is not fetched again.

Needs the optional extra: `pip install 'mammoseg[dicomweb]'`.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from mammoseg.dicom.bounded import read_dicom
from mammoseg.dicom.codes import SEGMENTATION
from mammoseg.dicom.seg import SegIdentity, referenced_instances, seg_identity
from mammoseg.dicom.sr import sr_identity, sr_references
from mammoseg.dicomweb.answers import (
    BadAnswer,
    FirstPart,
    check_part10,
    dicom_json,
    json_value,
    multipart_boundary,
    one_line,
)
from mammoseg.dicomweb.instances import (
    FetchResult,
    InstanceRef,
    SrFound,
    StoredSeg,
    StoreOutcome,
    cache_path,
    instance_ref,
    matching_seg,
    stored_seg,
    stored_sr,
)
from mammoseg.dicomweb.limits import AnswerTooLarge, DeadlineExceeded, Limits, end_answer, iter_answer
from mammoseg.dicomweb.session import (
    ENV_USER,
    RETRY_STATUS,
    DicomWebError,
    checked_url,
    make_session,
    resolve_auth,
    root_reason,
)
from mammoseg.dicomweb.source import DicomWebSource, instance_url
from mammoseg.io import atomic_path

try:  # the optional extra (the session module has already checked requests)
    import requests
    from dicomweb_client.api import DICOMwebClient
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"DICOMweb access needs dicomweb-client ({_missing}): pip install 'mammoseg[dicomweb]'"
    ) from _missing

log = logging.getLogger(__name__)
# dicomweb-client logs every request at INFO; mammoseg reports what matters itself.
if logging.getLogger("dicomweb_client").level == logging.NOTSET:
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

#: QIDO attributes asked for each instance: study, series and SOP instance UIDs, SOP class, modality.
_FIELDS = ("0020000D", "0020000E", "00080018", "00080016", "00080060")
#: Results asked for per QIDO request (limit/offset paging).
QIDO_PAGE = 1000
_JSON_ACCEPT = "application/dicom+json, application/json"
#: The prefix of every Structured Report SOP class UID.
_SR_CLASSES = "1.2.840.10008.5.1.4.1.1.88."
_WADO_ACCEPT = 'multipart/related; type="application/dicom"'


class DicomWeb:
    """One DICOMweb server: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS).

    `url` is the service root (e.g. `https://pacs.example.org/dicom-web`). `timeout` is
    (connect, read) seconds of silence a request tolerates; `limits` bound each whole answer
    in time and size and each search in results (`mammoseg.dicomweb.limits`); `retries` and
    `backoff` drive urllib3's Retry (waits of backoff x 2^n seconds, at most 30).
    Credentials as the module docstring says.
    """

    def __init__(
        self,
        url: str,
        *,
        netrc_file: str | os.PathLike | None = None,
        ca_bundle: str | os.PathLike | None = None,
        timeout: float | tuple[float, float] = (10.0, 120.0),
        retries: int = 4,
        backoff: float = 0.5,
        env: Mapping[str, str] | None = None,
        limits: Limits = Limits(),
    ) -> None:
        self.url = checked_url(url)
        auth, self.auth_source = resolve_auth(self.url, netrc_file, env)
        self.retries, self.timeout, self.limits = retries, timeout, limits
        self.session = make_session(auth, ca_bundle, retries, backoff, limits)
        self.client = DICOMwebClient(self.url, session=self.session, timeout=timeout)  # STOW-RS
        self.client.set_http_retry_params(retry=False)  # urllib3 retries underneath, connection errors too

    @classmethod
    def connect(cls, source: DicomWebSource) -> DicomWeb:
        """A client for `source`'s server (credentials from the environment or netrc).

        `timeout` bounds each request as a whole: it is the deadline for the whole answer, and
        also the connect and read timeouts (at most 10 s to connect)."""
        options: dict[str, Any] = {"netrc_file": source.netrc, "ca_bundle": source.ca_bundle}
        limits: dict[str, Any] = {}
        if source.timeout is not None:
            if not source.timeout > 0:
                raise ValueError(f"--timeout must be positive, got {source.timeout}")
            options["timeout"] = (min(10.0, source.timeout), source.timeout)
            limits["deadline"] = source.timeout
        if source.max_instances is not None:
            if source.max_instances < 1:
                raise ValueError(f"--max-instances must be at least 1, got {source.max_instances}")
            limits["max_instances"] = source.max_instances
        return cls(source.url, limits=Limits(**limits), **options)

    def __enter__(self) -> DicomWeb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def check(self) -> None:
        """One small QIDO request, so a wrong URL, password or certificate fails before any work."""
        with self._errors(""):
            self._get_json(f"{self.url}/studies", {"limit": 1, "includefield": "0020000D"})

    def search_instances(
        self, studies: Sequence[str] = (), query: Mapping[str, str] | None = None
    ) -> list[InstanceRef]:
        """Instances of the `studies` and of the studies matching `query` (QIDO study filters: ModalitiesInStudy...)."""
        study_uids = list(dict.fromkeys(studies))
        if query:
            found = self._all_pages(f"{self.url}/studies", {**query, "includefield": "0020000D"}, "0020000D",
                                    "study search", self.limits.max_instances)
            study_uids += [uid for uid in (json_value(r, "0020000D") for r in found) if uid and uid not in study_uids]
        refs: list[InstanceRef] = []
        for study in study_uids:
            results = self._all_pages(f"{self.url}/studies/{study}/instances", {"includefield": list(_FIELDS)},
                                      "00080018", f"study {study}", self.limits.max_instances - len(refs))
            if not results:
                log.warning("%s study %s: no instances found", self.url, study)
            refs += [instance_ref(r, study) for r in results]
        return refs

    def retrieve(self, ref: InstanceRef, cache: str | os.PathLike) -> Path:
        """The instance as a file in `cache` (fetched once; written atomically, as received)."""
        path = cache_path(cache, ref)
        if path.is_file():
            return path
        url = instance_url(self.url, ref)
        with self._errors(url, named=True), atomic_path(path) as tmp:
            self._download(url, tmp)
            check_part10(tmp, ref.sop_uid)
        return path

    def _download(self, url: str, target: Path) -> None:
        """The DICOM part of the WADO-RS answer at `url`, streamed into `target` (at most max_instance_bytes)."""
        response = self.session.get(url, headers={"Accept": _WADO_ACCEPT}, stream=True, timeout=self.timeout)
        try:
            response.raise_for_status()
            boundary = multipart_boundary(response)
            with open(target, "wb") as sink:
                part = FirstPart(boundary, sink) if boundary is not None else None
                for chunk in iter_answer(response, self.limits.max_instance_bytes):
                    if part is None:
                        sink.write(chunk)
                    elif part.feed(chunk):
                        return  # the part is whole: the rest of the answer is not needed
                if part is not None:
                    part.close()
        finally:
            end_answer(response)

    def fetch(self, refs: Sequence[InstanceRef], cache: str | os.PathLike) -> FetchResult:
        """Retrieve every ref; an instance that fails, for whatever reason, is reported and the others go on.

        Authentication and connection failures concern the server, not one instance, and a full
        disk the machine: they are raised at once instead of being repeated for every instance.
        """
        result = FetchResult()
        for ref in refs:
            try:
                result.files[ref.sop_uid] = self.retrieve(ref, cache)
            except DicomWebError as exc:
                if exc.fatal:
                    raise
                result.failures[ref.sop_uid] = str(exc)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                result.failures[ref.sop_uid] = f"{instance_url(self.url, ref)}: {one_line(exc)}"
            except Exception as exc:  # noqa: BLE001 - one instance never stops the others
                result.failures[ref.sop_uid] = (f"{instance_url(self.url, ref)}: {type(exc).__name__}: "
                                                f"{one_line(exc)}")
            if ref.sop_uid in result.failures:
                log.warning("%s", result.failures[ref.sop_uid])
        return result

    def stored_segs(self, study_uid: str) -> list[StoredSeg]:
        """The SEGs of a study with their run identity and referenced images (QIDO, then metadata)."""
        results = self._all_pages(f"{self.url}/studies/{study_uid}/instances",
                                  {"Modality": "SEG", "includefield": list(_FIELDS)}, "00080018", f"study {study_uid}",
                                  self.limits.max_instances)
        segs = []
        for ref in (instance_ref(r, study_uid) for r in results):
            if ref.sop_class not in ("", SEGMENTATION):
                continue
            with self._errors(f"SEG {ref.sop_uid}"):
                segs.append(stored_seg(ref, self._get_json(f"{instance_url(self.url, ref)}/metadata")))
        return segs

    def stored_srs(self, study_uid: str) -> list[StoredSeg]:
        """The SRs of a study with their run identity (`sr_identity`) and evidence (QIDO, then metadata).

        A server whose metadata leaves out the content tree (it may, for long sequences) gets the
        instance fetched instead, its header read with the bounded reader.
        """
        results = self._all_pages(f"{self.url}/studies/{study_uid}/instances",
                                  {"Modality": "SR", "includefield": list(_FIELDS)}, "00080018", f"study {study_uid}",
                                  self.limits.max_instances)
        srs = []
        for ref in (instance_ref(r, study_uid) for r in results):
            if ref.modality not in ("", "SR") or (ref.sop_class and not ref.sop_class.startswith(_SR_CLASSES)):
                continue  # a server that ignored the Modality filter
            with self._errors(f"SR {ref.sop_uid}"):
                srs.append(stored_sr(ref, self._get_json(f"{instance_url(self.url, ref)}/metadata")))
            if srs[-1].identity is None and not srs[-1].content:
                srs[-1] = self._fetched_sr(ref)
        return [StoredSeg(sr.ref, sr.identity, sr.references) for sr in srs]

    def _fetched_sr(self, ref: InstanceRef) -> SrFound:
        """An SR whose metadata had no content tree: fetched into a temporary folder and read there."""
        with tempfile.TemporaryDirectory(prefix="mammoseg-sr-") as folder:
            path = self.retrieve(ref, folder)
            try:
                ds = read_dicom(path, stop_before_pixels=True)
            except Exception as exc:  # the bounded reader refusing a file of the server's choosing
                raise DicomWebError(f"{instance_url(self.url, ref)}: not a readable SR ({one_line(exc)})") from exc
        return SrFound(ref, sr_identity(ds), sr_references(ds), bool(ds.get("ContentSequence")))

    def store_sr(self, sr: Dataset, identity: SegIdentity, source_uid: str, force: bool = False,
                 known: Sequence[StoredSeg] | None = None) -> StoreOutcome:
        """Store an SR of image `source_uid` unless this run and threshold already stored one; `force` stores anew.

        The rule of `store_seg`: `known` is the study's `stored_srs` when looked up once for many
        images. The SR must record `identity` (`build_dicom_sr(..., identity=...)`) and list the image.
        """
        if not identity.matches(sr_identity(sr)):
            raise ValueError(f"SR {sr.SOPInstanceUID}: does not record run {identity.run_id} at threshold "
                             f"{identity.threshold_text}; build it with identity=")
        if source_uid not in sr_references(sr):
            raise ValueError(f"SR {sr.SOPInstanceUID}: does not reference image {source_uid}")
        stored = None if force else known if known is not None else self.stored_srs(str(sr.StudyInstanceUID))
        return self._store_once(sr, source_uid, identity, stored)

    def find_seg(self, study_uid: str, source_sop_uid: str, identity: SegIdentity) -> StoredSeg | None:
        """The SEG this run and threshold stored for `source_sop_uid` before, or None (look before storing)."""
        return matching_seg(self.stored_segs(study_uid), source_sop_uid, identity)

    def store_seg(self, seg: Dataset, identity: SegIdentity, force: bool = False,
                  known: Sequence[StoredSeg] | None = None) -> StoreOutcome:
        """Store a SEG unless this run and threshold already stored one for its image; `force` stores anew.

        `known` is the study's `stored_segs`, when the caller looked them up once for many
        images; otherwise they are looked up here. The SEG must record `identity`
        (`build_dicom_seg(..., identity=...)`), or the next run could not find it.
        """
        sources = referenced_instances(seg)
        if len(sources) != 1:
            raise ValueError(f"SEG {seg.SOPInstanceUID}: references {len(sources)} images; one is expected")
        if not identity.matches(seg_identity(seg)):
            raise ValueError(f"SEG {seg.SOPInstanceUID}: does not record run {identity.run_id} at threshold "
                             f"{identity.threshold_text}; build it with identity=")
        (source,) = sources
        stored = None if force else known if known is not None else self.stored_segs(str(seg.StudyInstanceUID))
        return self._store_once(seg, source, identity, stored)

    def _store_once(self, dataset: Dataset, source_uid: str, identity: SegIdentity,
                    stored: Sequence[StoredSeg] | None) -> StoreOutcome:
        """Store `dataset` unless `stored` (what the server holds; None with --force) has one of this
        image by this run and threshold already."""
        existing = matching_seg(stored, source_uid, identity) if stored is not None else None
        if existing is not None:
            return StoreOutcome(False, existing.ref.sop_uid, source_uid)
        return StoreOutcome(True, self.store(dataset), source_uid)

    def store(self, dataset: Dataset | str | os.PathLike) -> str:
        """Store one instance (STOW-RS); returns its SOP Instance UID once the server accepted it."""
        if not isinstance(dataset, Dataset):
            dataset = read_dicom(dataset)
        uid = str(dataset.SOPInstanceUID)
        with self._errors(f"instance {uid}"):
            try:
                response = self.client.store_instances([dataset])
            except (requests.RequestException, DeadlineExceeded, AnswerTooLarge):
                raise
            except Exception as exc:  # dicomweb-client parsing an answer of the server's choosing
                raise BadAnswer(f"the STOW-RS answer is not understood ({type(exc).__name__}: "
                                f"{one_line(exc)})") from exc
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "unknown")
            raise DicomWebError(f"{self.url} instance {uid}: the server refused to store it (failure reason {reason})")
        stored = response.get("ReferencedSOPSequence") if response is not None else None
        if not any(str(item.get("ReferencedSOPInstanceUID", "")) == uid for item in stored or ()):
            # The Store Instances Response lists what was stored (PS3.18); a login page or an empty
            # answer confirms nothing.
            raise DicomWebError(f"{self.url} instance {uid}: the server's STOW-RS answer does not confirm it was "
                                "stored (no Referenced SOP Sequence item for it)")
        return uid

    def _get_json(self, url: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The DICOM JSON answer to a GET (QIDO-RS, metadata), checked by `answers.dicom_json`."""
        response = self.session.get(url, params=params, headers={"Accept": _JSON_ACCEPT}, timeout=self.timeout)
        response.raise_for_status()
        return dicom_json(response)

    def _all_pages(self, url: str, params: Mapping[str, Any], key: str, what: str, room: int) -> list[dict[str, Any]]:
        """Every QIDO result at `url`, page by page (limit/offset), each once by its `key` UID; at most `room`.

        Why bounded: a server may ignore `offset` and send the same page again, or make up new
        results on every page. A page that brings nothing new, or results past `room`, ends the
        search with a one-line error instead of a loop. A page shorter than asked is the last;
        so is a longer one (the server ignores `limit` and sent everything at once).
        """
        results: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            with self._errors(what):
                batch = self._get_json(url, {**params, "limit": QIDO_PAGE, "offset": offset})
                fresh = _new_results(batch, key, results)
            if batch and not fresh:
                raise DicomWebError(f"{self.url} {what}: the page at offset {offset} repeats results already received "
                                    "(the server ignores the QIDO offset); narrow the search (--study, --query) to "
                                    f"fewer than {QIDO_PAGE} results")
            results.update(fresh)
            if len(results) > room:
                noun = "studies" if key == "0020000D" else "instances"
                raise DicomWebError(f"{self.url} {what}: more than {self.limits.max_instances} {noun} found; "
                                    "narrow the search (--study, --query) or raise --max-instances")
            if len(batch) != QIDO_PAGE:
                return list(results.values())
            offset += len(batch)

    @contextmanager
    def _errors(self, what: str, named: bool = False) -> Iterator[None]:
        """Turn requests' exceptions and unusable answers into one-line DicomWebErrors naming the server and
        `what` (or, `named`, `what` alone: an instance's URL)."""
        where = what if named else f"{self.url} {what}".strip()
        try:
            yield
        except (BadAnswer, DeadlineExceeded, AnswerTooLarge) as exc:
            raise DicomWebError(f"{where}: {exc}") from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise DicomWebError(f"{where}: {self._http_reason(exc.response)}", fatal=status in (401, 403)) from exc
        except requests.exceptions.SSLError as exc:
            raise DicomWebError(f"{where}: TLS certificate verification failed ({root_reason(exc)}); "
                                "pass --ca-bundle FILE if the server's CA is private", fatal=True) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise DicomWebError(f"{where}: cannot reach the server after {self.retries} retries "
                                f"({root_reason(exc)})", fatal=True) from exc
        except requests.RequestException as exc:
            raise DicomWebError(f"{where}: {root_reason(exc)}") from exc

    def _http_reason(self, response: Any) -> str:
        status = response.status_code if response is not None else 0
        if status == 401:
            return (f"authentication failed: check {ENV_USER}/PASSWORD or the netrc file "
                    f"(credentials used: {self.auth_source})")
        if status == 403:
            return f"access denied (HTTP 403) for the credentials from {self.auth_source}"
        if status == 404:
            return "not found (HTTP 404)"
        text = f"HTTP {status} {getattr(response, 'reason', '') or ''}".strip()
        return f"{text} after {self.retries} retries" if status in RETRY_STATUS else text


def _new_results(batch: Sequence[Mapping[str, Any]], key: str, known: Mapping[str, Any]) -> dict[str, Any]:
    """The results of a QIDO page not in `known`, by their `key` UID; one without that UID is a BadAnswer."""
    fresh: dict[str, Any] = {}
    for index, result in enumerate(batch):
        uid = json_value(result, key)
        if not uid:
            raise BadAnswer(f"answered with a result ({index + 1} of the page) without {key}, the UID searched for")
        if uid not in known:
            fresh.setdefault(uid, result)
    return fresh
