"""A small DICOMweb client: find, fetch and classify mammograms on a server, store SEGs back.

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
- **Errors** are `DicomWebError`, one line naming the server (and instance) and the reason.
  Fetching many instances reports each failure and goes on with the rest.
- Retrieved instances go to a cache folder as `<study>/<series>/<sop>.dcm`, written
  atomically; a SOP instance never changes, so a cached file is not fetched again.

Needs the optional extra: `pip install 'mammoseg[dicomweb]'`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pydicom.dataset import Dataset
from pydicom.uid import UID

from mammoseg.dicom.codes import BREAST_TOMOSYNTHESIS, MG_FOR_PRESENTATION, MG_FOR_PROCESSING, SEGMENTATION
from mammoseg.dicom.seg import SegIdentity, referenced_instances, seg_identity
from mammoseg.dicomweb.session import (
    ENV_USER,
    RETRY_STATUS,
    DicomWebError,
    checked_url,
    make_session,
    resolve_auth,
    root_reason,
)
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


@dataclass(frozen=True)
class InstanceRef:
    """Where one instance lives on the server, and what QIDO said it is."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str = ""
    modality: str = ""


class Verdict(NamedTuple):
    """Whether mammoseg segments an instance, and if not, why."""

    segment: bool
    reason: str = ""


@dataclass(frozen=True)
class FetchResult:
    """Files fetched into the cache, and the instances that failed with their one-line reasons."""

    files: dict[str, Path] = field(default_factory=dict)  # SOP Instance UID -> cached file
    failures: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> reason


def classify(sop_class: str, modality: str, intent: str = "") -> Verdict:
    """For Presentation MG images are segmented; anything else is skipped, with the reason.

    `intent` (Presentation Intent Type) is known once the header is fetched; QIDO results
    carry only the SOP class and modality, which already tell the intent for MG.
    """
    modality, intent = modality.strip().upper(), intent.strip().upper()
    if sop_class == SEGMENTATION:
        return Verdict(False, "a segmentation (SEG), not an image")
    if sop_class == MG_FOR_PROCESSING or intent == "FOR PROCESSING":
        return Verdict(False, "a For Processing (raw) mammogram; mammoseg segments For Presentation images")
    if sop_class == BREAST_TOMOSYNTHESIS:
        return Verdict(False, "breast tomosynthesis is not supported (2-D mammograms only)")
    if modality and modality != "MG":
        return Verdict(False, f"modality {modality}, not MG")
    if sop_class != MG_FOR_PRESENTATION:
        return Verdict(False, f"SOP class {_sop_class_name(sop_class)} is not a For Presentation mammogram")
    return Verdict(True)


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return f"{name} ({uid})" if name and name != uid else (uid or "unknown")


#: A DICOM UID: digits and dots only, so it is safe as a file or folder name.
_UID = re.compile(r"^[0-9][0-9.]{0,63}$")


@dataclass(frozen=True)
class StoredSeg:
    """A SEG found on the server: where it is, which run made it (if mammoseg) and what it references."""

    ref: InstanceRef
    identity: SegIdentity | None
    references: frozenset[str]


class StoreOutcome(NamedTuple):
    """What `store_seg` did: stored a new SEG, or found the one stored before (its UID either way)."""

    stored: bool
    seg_uid: str
    source_uid: str


def cache_path(cache: str | os.PathLike, ref: InstanceRef) -> Path:
    """`<cache>/<study>/<series>/<sop>.dcm`; UIDs are checked first, so a server cannot pick other paths."""
    for uid in (ref.study_uid, ref.series_uid, ref.sop_uid):
        if not _UID.match(uid):
            raise DicomWebError(f"instance {ref.sop_uid!r}: invalid UID {uid!r} in the server's answer")
    return Path(cache) / ref.study_uid / ref.series_uid / f"{ref.sop_uid}.dcm"


def matching_seg(segs: Sequence[StoredSeg], source_sop_uid: str, identity: SegIdentity) -> StoredSeg | None:
    """The SEG among `segs` that this run and threshold already stored for `source_sop_uid`, if any."""
    for seg in segs:
        if source_sop_uid in seg.references and identity.matches(seg.identity):
            return seg
    return None


class DicomWeb:
    """One DICOMweb server: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS).

    `url` is the service root (e.g. `https://pacs.example.org/dicom-web`). `timeout` is
    (connect, read) seconds per request; `retries` and `backoff` drive urllib3's Retry
    (waits of backoff x 2^n seconds, at most 30). Credentials as the module docstring says.
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
    ) -> None:
        self.url = checked_url(url)
        auth, self.auth_source = resolve_auth(self.url, netrc_file, env)
        self.retries = retries
        self.session = make_session(auth, ca_bundle, retries, backoff)
        self.client = DICOMwebClient(self.url, session=self.session, timeout=timeout)
        self.client.set_http_retry_params(retry=False)  # urllib3 retries underneath, connection errors too

    def __enter__(self) -> DicomWeb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def check(self) -> None:
        """One small QIDO request, so a wrong URL, password or certificate fails before any work."""
        with self._errors(""):
            self.client.search_for_studies(limit=1, fields=["0020000D"])

    def search_instances(
        self, studies: Sequence[str] = (), query: Mapping[str, str] | None = None
    ) -> list[InstanceRef]:
        """Instances of the `studies` and of the studies matching `query` (QIDO study filters: ModalitiesInStudy...)."""
        study_uids = list(dict.fromkeys(studies))
        if query:
            with self._errors("study search"):
                found = self._all_pages(self.client.search_for_studies, "0020000D", search_filters=dict(query),
                                        fields=["0020000D"])
            study_uids += [uid for uid in (_json_value(r, "0020000D") for r in found) if uid and uid not in study_uids]
        refs: list[InstanceRef] = []
        for study in study_uids:
            with self._errors(f"study {study}"):
                results = self._all_pages(self.client.search_for_instances, "00080018", study_instance_uid=study,
                                          fields=list(_FIELDS))
            if not results:
                log.warning("%s study %s: no instances found", self.url, study)
            refs += [_instance_ref(r, study) for r in results]
        return refs

    def retrieve(self, ref: InstanceRef, cache: str | os.PathLike) -> Path:
        """The instance as a file in `cache` (fetched once; written atomically)."""
        path = cache_path(cache, ref)
        if path.is_file():
            return path
        with self._errors(f"instance {ref.sop_uid}"):
            ds = self.client.retrieve_instance(ref.study_uid, ref.series_uid, ref.sop_uid)
        if str(ds.get("SOPInstanceUID", "")) != ref.sop_uid:
            raise DicomWebError(f"{self.url} instance {ref.sop_uid}: the server returned {ds.get('SOPInstanceUID')}")
        with atomic_path(path) as tmp:
            ds.save_as(tmp)  # as received: same preamble, file meta and encoding
        return path

    def fetch(self, refs: Sequence[InstanceRef], cache: str | os.PathLike) -> FetchResult:
        """Retrieve every ref; an instance that fails is reported and the others go on.

        Authentication and connection failures concern the server, not one instance: they
        are raised at once instead of being repeated for every instance.
        """
        result = FetchResult()
        for ref in refs:
            try:
                result.files[ref.sop_uid] = self.retrieve(ref, cache)
            except DicomWebError as exc:
                if exc.fatal:
                    raise
                result.failures[ref.sop_uid] = str(exc)
                log.warning("%s", exc)
        return result

    def stored_segs(self, study_uid: str) -> list[StoredSeg]:
        """The SEGs of a study with their run identity and referenced images (QIDO, then metadata)."""
        with self._errors(f"study {study_uid}"):
            results = self._all_pages(self.client.search_for_instances, "00080018", study_instance_uid=study_uid,
                                      search_filters={"Modality": "SEG"}, fields=list(_FIELDS))
        segs = []
        for ref in (_instance_ref(r, study_uid) for r in results):
            if ref.sop_class not in ("", SEGMENTATION):
                continue
            with self._errors(f"SEG {ref.sop_uid}"):
                metadata = self.client.retrieve_instance_metadata(ref.study_uid, ref.series_uid, ref.sop_uid)
            ds = Dataset.from_json(metadata, bulk_data_uri_handler=_no_bulk_data)
            segs.append(StoredSeg(ref, seg_identity(ds), frozenset(referenced_instances(ds))))
        return segs

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
        if not force:
            segs = known if known is not None else self.stored_segs(str(seg.StudyInstanceUID))
            existing = matching_seg(segs, source, identity)
            if existing is not None:
                return StoreOutcome(False, existing.ref.sop_uid, source)
        return StoreOutcome(True, self.store(seg), source)

    def store(self, dataset: Dataset | str | os.PathLike) -> str:
        """Store one instance (STOW-RS); returns its SOP Instance UID once the server accepted it."""
        if not isinstance(dataset, Dataset):
            import pydicom

            dataset = pydicom.dcmread(dataset)
        uid = str(dataset.SOPInstanceUID)
        with self._errors(f"instance {uid}"):
            response = self.client.store_instances([dataset])
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reason = failed[0].get("FailureReason", "unknown")
            raise DicomWebError(f"{self.url} instance {uid}: the server refused to store it (failure reason {reason})")
        return uid

    def _all_pages(self, search: Any, key: str, page: int = 1000, **kwargs: Any) -> list[dict[str, Any]]:
        """Every QIDO result, page by page (limit/offset), each once by its `key` UID.

        Some servers ignore `offset` with some filters and answer the first page again;
        a page with nothing new ends the search instead of looping forever.
        """
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset = 0
        while True:
            batch = search(limit=page, offset=offset, **kwargs)
            fresh = [r for r in batch if _json_value(r, key) not in seen]
            seen.update(_json_value(r, key) for r in fresh)
            results += fresh
            if len(batch) < page or not fresh:
                if batch and not fresh:
                    log.warning("%s ignored the QIDO offset; the search may have missed results", self.url)
                return results
            offset += len(batch)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn requests' exceptions into one-line DicomWebErrors naming the server and `what`."""
        where = f"{self.url} {what}".strip()
        try:
            yield
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


def _json_value(result: Mapping[str, Any], tag: str) -> str:
    values = result.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _instance_ref(result: Mapping[str, Any], study_uid: str) -> InstanceRef:
    return InstanceRef(
        study_uid=_json_value(result, "0020000D") or study_uid,
        series_uid=_json_value(result, "0020000E"),
        sop_uid=_json_value(result, "00080018"),
        sop_class=_json_value(result, "00080016"),
        modality=_json_value(result, "00080060"),
    )


def _no_bulk_data(*_: object) -> bytes:
    """Metadata is enough to identify a SEG: its pixel data is not fetched."""
    return b""


