"""What DICOMweb answers describe: instances, whether mammoseg segments them, the SEGs and SRs stored.

Why apart from the client: these are plain values and the rules that read them (which
instances are For Presentation mammograms, where a fetched instance lives in the cache, which
stored SEG or SR this run made before), so they are read and tested without any request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pydicom.dataset import Dataset
from pydicom.uid import UID

from mammoseg.dicom.codes import BREAST_TOMOSYNTHESIS, MG_FOR_PRESENTATION, MG_FOR_PROCESSING, SEGMENTATION
from mammoseg.dicom.seg import SegIdentity, referenced_instances, seg_identity
from mammoseg.dicom.sr import sr_identity, sr_references
from mammoseg.dicomweb.answers import BadAnswer, json_value, one_line
from mammoseg.dicomweb.session import DicomWebError


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
    """A SEG (or SR) found on the server: where it is, which run made it (if mammoseg) and what it references."""

    ref: InstanceRef
    identity: SegIdentity | None
    references: frozenset[str]


class StoreOutcome(NamedTuple):
    """What `store_seg` (`store_sr`) did: stored a new one, or found the one stored before (its UID either way)."""

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


def instance_ref(result: Mapping[str, Any], study_uid: str) -> InstanceRef:
    return InstanceRef(
        study_uid=json_value(result, "0020000D") or study_uid,
        series_uid=json_value(result, "0020000E"),
        sop_uid=json_value(result, "00080018"),
        sop_class=json_value(result, "00080016"),
        modality=json_value(result, "00080060"),
    )


def stored_seg(ref: InstanceRef, metadata: Sequence[Mapping[str, Any]]) -> StoredSeg:
    """The SEG that `metadata` (a WADO-RS metadata answer) describes; a BadAnswer unless it is one data set."""
    if len(metadata) != 1:
        raise BadAnswer(f"answered with {len(metadata)} data sets for one instance's metadata")
    try:
        ds = Dataset.from_json(dict(metadata[0]), bulk_data_uri_handler=_no_bulk_data)
        return StoredSeg(ref, seg_identity(ds), frozenset(referenced_instances(ds)))
    except Exception as exc:  # pydicom and the SEG readers meeting JSON of the server's choosing
        raise BadAnswer(f"answered with metadata that is not a usable SEG ({type(exc).__name__}: "
                        f"{one_line(exc)[:200]})") from exc


class SrFound(NamedTuple):
    ref: InstanceRef
    identity: SegIdentity | None
    references: frozenset[str]
    content: bool  # whether the data set held a content tree to read the identity from


def stored_sr(ref: InstanceRef, metadata: Sequence[Mapping[str, Any]]) -> SrFound:
    """The SR that `metadata` describes; a BadAnswer unless it is one data set."""
    if len(metadata) != 1:
        raise BadAnswer(f"answered with {len(metadata)} data sets for one instance's metadata")
    try:
        ds = Dataset.from_json(dict(metadata[0]), bulk_data_uri_handler=_no_bulk_data)
        return SrFound(ref, sr_identity(ds), sr_references(ds), bool(ds.get("ContentSequence")))
    except Exception as exc:  # pydicom meeting JSON of the server's choosing
        raise BadAnswer(f"answered with metadata that is not a usable SR ({type(exc).__name__}: "
                        f"{one_line(exc)[:200]})") from exc


def _no_bulk_data(*_: object) -> bytes:
    """Metadata is enough to identify a SEG: its pixel data is not fetched."""
    return b""
