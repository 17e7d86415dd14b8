"""DICOMweb source: a training set pulled from a PACS or archive, masks from the SEGs stored there.

Why: when a group's mammograms and their annotations live on a server, `prepare` should
read them from there, not from a copy someone exported by hand. The studies are given by
Study Instance UID and/or QIDO study filters (e.g. `ModalitiesInStudy=MG`,
`StudyDate=20240101-20241231`). Every instance of those studies is listed:

- For Presentation MG images are fetched into the cache folder and become records;
- SEG objects are fetched too; the mass segments of MANUAL or SEMIAUTOMATIC SEGs that
  reference an image make its mask (`SegMask`; several are merged). AUTOMATIC SEGs, such as
  the predictions `predict --store` sends back, never count as reference masks;
- anything else (For Processing images, other modalities, reports) becomes a record with
  the reason it was skipped, which `prepare` lists in errors.csv; so does an image whose
  retrieval failed, whatever the server sent (the reason names its WADO-RS URL), while the
  others go on.

An image with no SEG gets an empty mask. `src` is the cache folder (files are named
`<study>/<series>/<sop>.dcm`, fetched once); record ids are SOP Instance UIDs.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from mammoseg.dicom.bounded import DicomReadError, read_dicom
from mammoseg.dicom.codes import SEGMENTATION
from mammoseg.dicom.seg import mass_segment_numbers, referenced_instances
from mammoseg.dicomweb.source import DicomWebSource
from mammoseg.manifest import safe_id
from mammoseg.sources.records import NoMask, Record, SegMask

log = logging.getLogger(__name__)

SOURCE = "dicomweb"


def iter_dicomweb_records(
    src: str | os.PathLike,
    url: str,
    studies: Sequence[str] = (),
    query: Sequence[str] = (),
    netrc: str | None = None,
    ca_bundle: str | None = None,
    timeout: float | None = None,
    max_instances: int | None = None,
) -> Iterator[Record]:
    """Records of the studies on the server at `url`, fetched into the cache folder `src` (module docstring).

    The keywords are those a prepared folder records (`DicomWebSource.options`)."""
    from mammoseg.dicomweb import DicomWeb, cache_path, classify

    source = DicomWebSource(url, Path(src), tuple(studies), tuple(query), netrc, ca_bundle, timeout, max_instances)
    cache = source.cache
    filters = source.filters("--format dicomweb")
    with DicomWeb.connect(source) as web:
        web.check()
        refs = web.search_instances(studies, filters)
        if not refs:
            raise ValueError(f"{web.url}: no instances in the studies asked for ({source.asked()})")
        seg_refs = [r for r in refs if r.sop_class == SEGMENTATION]
        wanted = [r for r in refs if r.sop_class != SEGMENTATION and classify(r.sop_class, r.modality).segment]
        segs = web.fetch(seg_refs, cache)
        images = web.fetch(wanted, cache)
    masks = _mass_segments_by_image(segs.files.values())
    for sop, reason in segs.failures.items():
        log.warning("SEG %s could not be fetched, its masks are missing: %s", sop, reason)
    for ref in refs:
        if ref.sop_class == SEGMENTATION:
            continue
        path = cache_path(cache, ref)
        verdict = classify(ref.sop_class, ref.modality)
        if not verdict.segment:
            problem = f"{web.url} instance {ref.sop_uid}: skipped, {verdict.reason}"
        else:
            problem = images.failures.get(ref.sop_uid) or _header_problem(path)
        yield _record(ref.sop_uid, path, masks.get(ref.sop_uid, ()), problem)


def _mass_segments_by_image(seg_files: Iterable[Path]) -> dict[str, list[tuple[Path, tuple[int, ...]]]]:
    """SOP Instance UID of an image -> the (SEG file, mass segment numbers) that annotate it."""
    index: dict[str, list[tuple[Path, tuple[int, ...]]]] = defaultdict(list)
    for path in sorted(seg_files):
        try:
            header = read_dicom(path, stop_before_pixels=True)
        except DicomReadError as exc:  # a broken SEG loses its masks, not the whole source
            log.warning("%s: unreadable SEG, ignored (%s)", path, exc)
            continue
        numbers = mass_segment_numbers(header)
        if not numbers:
            continue
        for uid in sorted(referenced_instances(header)):
            index[uid].append((Path(path), numbers))
    return index


def _header_problem(path: Path) -> str:
    """Why a fetched file is not a For Presentation mammogram after all (its header decides), or ''."""
    from mammoseg.dicomweb import classify

    try:
        header = read_dicom(path, stop_before_pixels=True)
    except DicomReadError as exc:
        return str(exc)
    verdict = classify(str(header.get("SOPClassUID", "")), str(header.get("Modality", "")),
                       str(header.get("PresentationIntentType", "")))
    return "" if verdict.segment else f"{path}: skipped, {verdict.reason}"


def _record(sop_uid: str, path: Path, segs: Sequence[tuple[Path, tuple[int, ...]]], problem: str) -> Record:
    mask = SegMask(sop_uid, tuple(segs)) if segs else NoMask()
    return Record(id=safe_id(sop_uid), image=path, patient_id="", mask=mask, source=SOURCE, problem=problem)
