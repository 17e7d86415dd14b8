"""`predict --dicomweb`: segment the mammograms of studies on a DICOMweb server, store SEGs and SRs back.

Why: a group's mammograms live in a PACS or archive, and the predictions belong beside them,
where viewers show them. The round trip is layered on the units that already do each part:

1. **search** (QIDO-RS) the studies given by UID and/or QIDO study filters. For Presentation
   MG images are segmented; every other instance (SEGs, For Processing images, other
   modalities, tomosynthesis) goes to `skipped.csv` with the reason (`dicomweb.classify`),
   and is not a failure;
2. **fetch** (WADO-RS) the mammograms into the cache folder (`<study>/<series>/<sop>.dcm`,
   fetched once, shared with `prepare --format dicomweb`). An instance that fails to
   download goes to `errors.csv` and the others go on;
3. **predict** them as local DICOM files (`mammoseg.inference.predict.predict`, DICOM SEG on), each SEG
   recording the run id and threshold (`mammoseg.inference.run_identity`). Ids are SOP Instance UIDs,
   so the mask of an image is `masks/<SOPInstanceUID>.png`;
4. with `store`, **send back** (STOW-RS) each `seg/<uid>.dcm` and the SR beside it (`sr/<uid>.dcm`,
   `mammoseg.dicom.sr`: with `store` the SR is always written), each unless the server already
   holds one of that image by this run at this threshold (the study's SEGs and SRs are looked up
   once each); `force` stores anew. An SR is sent only once its SEG is on the server, and refers
   to the SEG found there when that one was stored before. `stored.csv` says what happened to
   each image's SEG and SR (one row per image).

`predict.json` gains the run's name and id and a `dicomweb` section with the counts. The cache
lies outside the prediction folder, because predict never reads inputs inside its own output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammoseg.dicom.bounded import DicomReadError, read_dicom
from mammoseg.dicom.seg import SegIdentity, require_highdicom
from mammoseg.dicomweb.source import DicomWebSource, instance_url, parse_query
from mammoseg.folders import open_output_folder
from mammoseg.inference.journal import ERRORS_COLUMNS
from mammoseg.inference.outputs import OUTPUT_ENTRIES
from mammoseg.inference.predict import PredictOptions, predict, resolve_postprocessing
from mammoseg.inference.run_identity import run_id, run_identity
from mammoseg.io import read_csv, write_csv_atomic, write_text_atomic
from mammoseg.layouts import PredictionLayout

if TYPE_CHECKING:  # the optional extra, imported where used
    from mammoseg.dicomweb import DicomWeb, InstanceRef, StoredSeg

SKIPPED_COLUMNS = ("sop_instance_uid", "study_instance_uid", "series_instance_uid", "sop_class_uid", "modality",
                   "reason")
STORED_COLUMNS = ("source_sop_instance_uid", "study_instance_uid", "seg_sop_instance_uid", "outcome", "reason",
                  "sr_sop_instance_uid", "sr_outcome", "sr_reason")
#: `stored.csv` outcomes.
STORED, ALREADY_STORED, FAILED = "stored", "already stored", "failed"


@dataclass(frozen=True)
class DicomWebJob:
    """One `predict --dicomweb`: where the images come from, whether SEGs go back, and whether the
    prediction folder may be replaced."""

    source: DicomWebSource
    store: bool = False
    force: bool = False
    overwrite: bool = False

    def check(self) -> dict[str, str]:
        """Refuse contradictory flags before any request; returns the QIDO filters."""
        filters = self.source.filters("--dicomweb")
        if self.force and not self.store:
            raise ValueError("--force applies with --store only")
        return filters


@dataclass
class Selection:
    """The instances found, sorted: the mammograms to predict (cached files) and what was not used."""

    refs: dict[str, InstanceRef] = field(default_factory=dict)  # SOP Instance UID -> each mammogram
    files: dict[str, Path] = field(default_factory=dict)  # SOP Instance UID -> cached file, to predict
    skipped: list[dict[str, str]] = field(default_factory=list)  # skipped.csv rows
    errors: list[dict[str, str]] = field(default_factory=list)  # errors.csv rows (downloads that failed)


def predict_dicomweb(
    run_dir: str | os.PathLike, job: DicomWebJob, out_dir: str | os.PathLike, options: PredictOptions = PredictOptions()
) -> dict[str, Any]:
    """The round trip of the module docstring; returns predict's summary with the `dicomweb` counts.

    `options` are predict's (threshold, post-processing, tta, save_prob, batch_size, device, progress);
    DICOM SEG is always on, and each SEG records this run's identity and the threshold in force.
    """
    from mammoseg.dicomweb import DicomWeb

    job.check()
    require_highdicom()
    known_run_id = run_id(run_dir)  # hashes the checkpoints: once per run
    options = resolve_postprocessing(run_dir, options, known_run_id)  # the run's post-processing and threshold
    identity = run_identity(run_dir, options.threshold, known_run_id=known_run_id)
    with DicomWeb.connect(job.source) as web:
        web.check()
        claim_output(out_dir, job)  # a bad --out is refused before the search
        refs = web.search_instances(job.source.studies, job.source.filters("--dicomweb"))
        if not refs:
            raise ValueError(f"{web.url}: no instances in the studies asked for ({job.source.asked()})")
        return predict_instances(web, refs, run_dir, out_dir, job, replace(options, seg_identity=identity))


def claim_output(out_dir: str | os.PathLike, job: DicomWebJob) -> None:
    """Refuse an unusable prediction folder (or a cache inside it) before anything is downloaded."""
    open_output_folder(out_dir, "predict", inputs=[job.source.cache], owned=OUTPUT_ENTRIES,
                       overwrite=job.overwrite).close()


def predict_instances(
    web: DicomWeb,
    refs: Sequence[InstanceRef],
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    job: DicomWebJob,
    options: PredictOptions,
) -> dict[str, Any]:
    """Steps 2-4 of the module docstring for instances already found on the server `web` (a `DicomWeb`);
    `options.seg_identity` names the run and threshold each SEG records."""
    identity = options.seg_identity
    if identity is None:
        raise ValueError("predict_instances: options.seg_identity is required (the SEGs must say which run made them)")
    claim_output(out_dir, job)
    out, cache = Path(out_dir), job.source.cache
    about = {"url": web.url, "studies": sorted({r.study_uid for r in refs}), "query": parse_query(job.source.query),
             "cache": str(cache), "store": job.store, "force": job.force}
    selection = select_mammograms(refs)
    if not selection.refs:
        raise ValueError(f"{web.url}: no For Presentation mammogram among the {len(refs)} instance(s) found; "
                         f"first skipped: {selection.skipped[0]['sop_instance_uid']}, {selection.skipped[0]['reason']}")
    fetch_mammograms(web, selection, cache)
    options = replace(options, threshold=identity.threshold, dicom_seg=True, dicom_sr=options.dicom_sr or job.store)
    summary = predict(run_dir, [str(p) for p in selection.files.values()], out, options, overwrite=job.overwrite)
    with open_output_folder(out, "predict", resume=True, owned=OUTPUT_ENTRIES):
        stored = store_segs(web, out, selection, identity, job.force) if job.store else None
        return _finish(out, summary, selection, identity, stored, about)


def select_mammograms(refs: Sequence[InstanceRef]) -> Selection:
    """Which instances are segmented (For Presentation MG, by QIDO's SOP class and modality) and why not the rest."""
    from mammoseg.dicomweb import classify

    selection = Selection()
    for ref in refs:
        verdict = classify(ref.sop_class, ref.modality)
        if verdict.segment:
            selection.refs.setdefault(ref.sop_uid, ref)
        else:
            selection.skipped.append(_skipped_row(ref, verdict.reason))
    return selection


def fetch_mammograms(web: DicomWeb, selection: Selection, cache: Path) -> None:
    """Download the selected mammograms; failures and headers that are not For Presentation MG after all
    move out of the selection (to errors and skipped). A server-wide failure (password, connection) raises."""
    from mammoseg.dicomweb import DicomWebError

    fetched = web.fetch(list(selection.refs.values()), cache)
    for sop, reason in fetched.failures.items():
        ref = selection.refs.pop(sop)
        selection.errors.append({"input": instance_url(web.url, ref), "reason": reason})
    for sop, path in fetched.files.items():
        reason = _header_skip_reason(path)
        if reason:
            selection.skipped.append(_skipped_row(selection.refs.pop(sop), reason))
        else:
            selection.files[sop] = path
    if not selection.files and selection.errors:
        raise DicomWebError(f"{web.url}: none of the {len(selection.errors)} mammogram(s) could be fetched; "
                            f"first: {selection.errors[0]['reason']}")
    if not selection.files:
        raise ValueError(f"{web.url}: no For Presentation mammogram among the instances found; first skipped: "
                         f"{selection.skipped[0]['sop_instance_uid']}, {selection.skipped[0]['reason']}")


def _header_skip_reason(path: Path) -> str:
    """Why a fetched file is not a For Presentation mammogram after all (its header decides), or ''."""
    from mammoseg.dicomweb import classify

    try:
        header = read_dicom(path, stop_before_pixels=True)
    except DicomReadError:  # unreadable: predict reads it again and reports why in errors.csv
        return ""
    verdict = classify(str(header.get("SOPClassUID", "")), str(header.get("Modality", "")),
                       str(header.get("PresentationIntentType", "")))
    return "" if verdict.segment else verdict.reason


def _skipped_row(ref: InstanceRef, reason: str) -> dict[str, str]:
    return {"sop_instance_uid": ref.sop_uid, "study_instance_uid": ref.study_uid,
            "series_instance_uid": ref.series_uid, "sop_class_uid": ref.sop_class, "modality": ref.modality,
            "reason": reason}


class _SegStore:
    """Stores SEGs and their SRs on one server: each study's SEGs and SRs are looked up once; after a
    server-wide failure (authentication, connection) the remaining ones are not tried, and say why."""

    def __init__(self, web: DicomWeb, identity: SegIdentity, force: bool) -> None:
        self.web, self.identity, self.force = web, identity, force
        self.known: dict[str, list[StoredSeg]] = {}
        self.known_srs: dict[str, list[StoredSeg]] = {}
        self.halted = ""

    def store(self, ref: InstanceRef, seg_path: Path) -> dict[str, str]:
        """The SEG's `stored.csv` columns for image `ref` (`seg_sop_instance_uid, outcome, reason`)."""
        from mammoseg.dicomweb import DicomWebError

        row = {"source_sop_instance_uid": ref.sop_uid, "study_instance_uid": ref.study_uid,
               "seg_sop_instance_uid": "", "outcome": FAILED, "reason": ""}
        if self.halted:
            return {**row, "reason": f"not tried after a server failure: {self.halted}"}
        try:
            if not self.force and ref.study_uid not in self.known:
                self.known[ref.study_uid] = self.web.stored_segs(ref.study_uid)
            seg = read_dicom(seg_path)
            outcome = self.web.store_seg(seg, self.identity, force=self.force, known=self.known.get(ref.study_uid))
        except DicomWebError as exc:
            self.halted = str(exc) if exc.fatal else ""
            return {**row, "reason": str(exc)}
        except (OSError, ValueError) as exc:  # an unreadable SEG file
            return {**row, "reason": f"{seg_path}: {type(exc).__name__}: {exc}"}
        return {**row, "seg_sop_instance_uid": outcome.seg_uid, "outcome": STORED if outcome.stored else ALREADY_STORED}

    def store_sr(self, ref: InstanceRef, seg_row: dict[str, str], sr_path: Path) -> dict[str, str]:
        """The SR's `stored.csv` columns for image `ref`, once its SEG's row `seg_row` is known."""
        from mammoseg.dicomweb import DicomWebError, matching_seg

        failed = {"sr_sop_instance_uid": "", "sr_outcome": FAILED}
        if seg_row["outcome"] == FAILED:
            return {**failed, "sr_reason": "not tried: the SEG it references is not on the server"}
        if self.halted:
            return {**failed, "sr_reason": f"not tried after a server failure: {self.halted}"}
        try:
            if not self.force and ref.study_uid not in self.known_srs:
                self.known_srs[ref.study_uid] = self.web.stored_srs(ref.study_uid)
            sr = read_dicom(sr_path)
            if self.force or not matching_seg(self.known_srs[ref.study_uid], ref.sop_uid, self.identity):
                self._refer_to_server_seg(sr, ref, seg_row["seg_sop_instance_uid"], sr_path)  # it will be sent
            outcome = self.web.store_sr(sr, self.identity, ref.sop_uid, force=self.force,
                                        known=self.known_srs.get(ref.study_uid))
        except DicomWebError as exc:
            self.halted = str(exc) if exc.fatal else ""
            return {**failed, "sr_reason": str(exc)}
        except DicomReadError as exc:  # an unreadable SR file: the reader's line names it
            return {**failed, "sr_reason": str(exc)}
        except (OSError, ValueError) as exc:
            return {**failed, "sr_reason": f"{sr_path}: {type(exc).__name__}: {exc}"}
        return {"sr_sop_instance_uid": outcome.seg_uid, "sr_outcome": STORED if outcome.stored else ALREADY_STORED,
                "sr_reason": ""}

    def _refer_to_server_seg(self, sr: Any, ref: InstanceRef, seg_uid: str, sr_path: Path) -> None:
        """When the server's SEG of the image is one stored before (not the local one), point the SR, and its
        local file, at it: the SR stored must reference a SEG the server holds."""
        from mammoseg.dicom.seg import save_atomic
        from mammoseg.dicom.sr import refer_to_seg, sr_references
        from mammoseg.dicomweb import matching_seg

        if seg_uid in sr_references(sr):
            return
        server_seg = matching_seg(self.known.get(ref.study_uid, []), ref.sop_uid, self.identity)
        local = [uid for uid in sr_references(sr) if uid != ref.sop_uid]
        if server_seg is None or server_seg.ref.sop_uid != seg_uid or len(local) != 1:
            raise ValueError(f"references no SEG of image {ref.sop_uid} that the server holds ({seg_uid})")
        refer_to_seg(sr, local[0], seg_uid, server_seg.ref.series_uid)
        save_atomic(sr, sr_path)


def store_segs(web: DicomWeb, out: Path, selection: Selection, identity: SegIdentity,
               force: bool) -> list[dict[str, str]]:
    """Send each predicted image's SEG, then its SR (when written), back (step 4); one `stored.csv` row per
    image, in predictions.csv order."""
    by_input = {str(path): selection.refs[sop] for sop, path in selection.files.items()}
    segs, layout = _SegStore(web, identity, force), PredictionLayout(out)
    rows = []
    for prediction in read_csv(layout.predictions):
        ref = by_input[prediction["input"]]
        row = segs.store(ref, layout.seg(prediction["id"]))
        sr_path = layout.sr(prediction["id"])
        none = {"sr_sop_instance_uid": "", "sr_outcome": "", "sr_reason": ""}  # no SR was written (without --store)
        rows.append({**row, **(segs.store_sr(ref, row, sr_path) if sr_path.exists() else none)})
    return rows


def _finish(out: Path, summary: dict[str, Any], selection: Selection, identity: SegIdentity,
            stored: list[dict[str, str]] | None, about: dict[str, Any]) -> dict[str, Any]:
    """skipped.csv, errors.csv with the failed downloads first, stored.csv; predict.json with the counts."""
    layout = PredictionLayout(out)
    write_csv_atomic(layout.skipped, selection.skipped, SKIPPED_COLUMNS)
    errors = selection.errors + read_csv(layout.errors)
    write_csv_atomic(layout.errors, errors, ERRORS_COLUMNS)
    if stored is not None:
        write_csv_atomic(layout.stored, stored, STORED_COLUMNS)
    outcomes = [row["outcome"] for row in stored or []]
    sr_outcomes = [row["sr_outcome"] for row in stored or []]
    n_store_failed = sum(FAILED in (row["outcome"], row["sr_outcome"]) for row in stored or [])
    n_mammograms = len(selection.files) + len(selection.errors)
    summary.update(run_name=identity.run_name, run_id=identity.run_id, n_errors=len(errors))
    summary["dicomweb"] = {
        **about, "n_mammograms": n_mammograms, "n_skipped": len(selection.skipped),
        "n_fetch_failed": len(selection.errors), "n_stored": outcomes.count(STORED),
        "n_already_stored": outcomes.count(ALREADY_STORED), "n_store_failed": outcomes.count(FAILED),
        "n_sr_stored": sr_outcomes.count(STORED), "n_sr_already_stored": sr_outcomes.count(ALREADY_STORED),
        "n_sr_store_failed": sr_outcomes.count(FAILED),
        # Mammograms not predicted, or (with store) whose SEG or SR could not be stored: what the exit status counts.
        "n_failed": n_mammograms - summary["n_predicted"] + n_store_failed,
    }
    write_text_atomic(layout.summary, json.dumps(summary, indent=2) + "\n")
    return summary
