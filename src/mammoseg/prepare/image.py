"""One image of `prepare`: read (DICOM windowed, or a PNG), standardise, write image and mask.

`prepare_one` is what a worker process runs per record; `results` runs many in worker
processes (`mammoseg.workers`: a record whose worker dies fails alone) and says, per record,
the manifest row or why it failed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammoseg.dicom import read_mammogram
from mammoseg.geometry import apply_to_mask, standardise
from mammoseg.io import as_uint16, read_png, write_png
from mammoseg.layouts import PreparedLayout
from mammoseg.sources import Record
from mammoseg.sources.records import normalise_laterality, normalise_view
from mammoseg.workers import run_tasks

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Raster image files a manifest source (and predict) takes besides DICOM: read unchanged, 8-bit ×257.
RASTER_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


def read_image(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The image as uint16 (DICOM windowed; 8-bit rasters ×257) and what its file says about it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == _PNG_SIGNATURE or path.suffix.lower() in RASTER_SUFFIXES:
        return as_uint16(read_png(path), path), {}
    mammogram = read_mammogram(path)
    meta = {
        "patient_id": mammogram.patient_id,
        "laterality": mammogram.laterality,
        "view": mammogram.view,
        "pixel_spacing": mammogram.pixel_spacing,
        "sop_instance_uid": mammogram.sop_instance_uid,
        "presentation_intent": mammogram.presentation_intent,
    }
    return mammogram.pixels, meta


def _format_spacing(spacing: Sequence[float] | None) -> str:
    if not spacing:
        return ""
    return f"{float(spacing[0]):g}\\{float(spacing[1]):g}"


def prepare_one(record: Record, out: Path, size: int, crop: bool = False) -> dict[str, Any]:
    """Read, (with `crop`) crop to the breast, pad, resize and write one record; the manifest row
    (without `split`; with the crop columns when `crop`)."""
    if record.problem:
        raise ValueError(record.problem)
    pixels, meta = read_image(record.image)
    height, width = pixels.shape
    patient_id = record.patient_id or str(meta.get("patient_id") or "").strip()
    if not patient_id:
        raise ValueError(f"{record.image}: no patient ID (the source gives none and the file has no PatientID)")
    mask = record.load_mask(height, width)
    standard = standardise(pixels, size, crop=crop)
    mask_out = apply_to_mask(mask, standard.plan)  # bool; non-zero is mass
    layout = PreparedLayout(out)
    write_png(layout.mask(record.id), mask_out)
    write_png(layout.image(record.id), standard.image)
    row: dict[str, Any] = {
        "id": record.id,
        "patient_id": patient_id,
        "image": layout.image(record.id).relative_to(out).as_posix(),
        "mask": layout.mask(record.id).relative_to(out).as_posix(),
        "split": "",
        "laterality": record.laterality or normalise_laterality(str(meta.get("laterality") or "")),
        "view": record.view or normalise_view(str(meta.get("view") or "")),
        "source": record.source,
        "has_mass": int(bool(mask_out.any())),
        "chest_side": standard.chest_side,
        "src_image": str(record.image),
        "pixel_spacing": _format_spacing(meta.get("pixel_spacing")),
        "sop_instance_uid": str(meta.get("sop_instance_uid") or ""),
        "presentation_intent": str(meta.get("presentation_intent") or ""),
    }
    row.update(standard.plan.to_row(with_crop=crop))
    return row


def _run_one(task: tuple[Record, Path, int, bool]) -> tuple[dict[str, Any] | None, str]:
    """`prepare_one` that never raises: (row or None, reason)."""
    record, out, size, crop = task
    try:
        return prepare_one(record, out, size, crop), ""
    except Exception as exc:  # a broken input must not stop the batch
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError)):
            reason = f"{type(exc).__name__}: {reason}"
        return None, reason


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism; avoid oversubscribing cores


def results(records: Sequence[Record], out: Path, size: int, workers: int,
            crop: bool = False) -> Iterator[tuple[Record, dict | None, str, bool]]:
    """(record, row or None, reason, whether its worker process died) for every record, as they finish."""
    tasks = [(record, out, size, crop) for record in records]
    if workers <= 1 or len(records) <= 1:
        for task in tasks:
            yield task[0], *_run_one(task), False
        return
    # (As with any spawned worker, a script calling this needs an `if __name__ == "__main__":` guard.)
    for result in run_tasks(_run_one, tasks, workers, initializer=_init_worker):
        record = records[result.index]
        if result.worker_died:
            yield record, None, f"{record.image}: {result.worker_died} while preparing it", True
        else:
            yield record, *result.value, False


def source_signature(record: Record) -> list[list[Any]]:
    """[path, size, mtime_ns] of every file an image is made from (image and mask files), so a
    resumed prepare notices an edited, replaced or moved source."""
    signature = []
    for path in record.source_files():
        try:
            stat = path.stat()
            signature.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            signature.append([str(path), -1, -1])
    return signature
