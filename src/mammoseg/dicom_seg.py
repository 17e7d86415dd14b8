"""Predicted masks as DICOM Segmentation objects (BINARY), so PACS viewers can show them.

The SEG references its source image (study, series and SOP instance UIDs are taken
from the source header), holds one segment labelled "Mass" (SNOMED CT: Morphologically
abnormal structure / Mass), and says it was made by an AUTOMATIC algorithm, mammoseg.
highdicom is an optional extra (`pip install mammoseg[dicom-seg]`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mammoseg.io import atomic_path

#: Series number given to mammoseg's SEG series (distinct from typical image series numbers).
SEG_SERIES_NUMBER = 9001
SEGMENT_LABEL = "Mass"
#: Type 2 patient/study attributes highdicom copies from the source; anonymised files often lack them.
_TYPE2_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_REQUIRED_FROM_SOURCE = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns")


def require_highdicom() -> Any:
    """Import highdicom, or explain how to install the optional extra."""
    try:
        import highdicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DICOM Segmentation output needs highdicom: pip install mammoseg[dicom-seg]"
        ) from exc
    return highdicom


def _source_header(source: Any) -> Any:
    """A copy of the source header without pixel data, with empty Type 2 attributes filled in."""
    from pydicom.dataset import Dataset

    where = getattr(source, "filename", None) or "source DICOM"
    missing = [k for k in _REQUIRED_FROM_SOURCE if k not in source]
    if missing:
        raise ValueError(f"{where}: cannot reference it from a DICOM SEG, it lacks {', '.join(missing)}")
    header = Dataset()
    for elem in source:
        if elem.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            header.add(elem)
    if hasattr(source, "file_meta"):
        header.file_meta = source.file_meta
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def build_dicom_seg(
    mask: np.ndarray,
    source: Any,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SEG_SERIES_NUMBER,
    instance_number: int = 1,
) -> Any:
    """A highdicom `Segmentation` (BINARY, one segment "Mass") of `mask` on the source's grid.

    `mask` is 2-D, on the source image's pixel grid (Rows x Columns), nonzero = mass.
    `source` is the source image's pydicom Dataset (pixel data not needed).
    """
    hd = require_highdicom()
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from mammoseg import __version__

    header = _source_header(source)
    where = getattr(source, "filename", None) or "source DICOM"
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != (int(header.Rows), int(header.Columns)):
        raise ValueError(
            f"{where}: mask shape {mask.shape} does not match the image ({header.Rows} x {header.Columns})"
        )
    algorithm = hd.AlgorithmIdentificationSequence(
        name="mammoseg",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        source="mammoseg",
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Mass,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    return hd.seg.Segmentation(
        source_images=[header],
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer="mammoseg",
        manufacturer_model_name="mammoseg fold ensemble",
        software_versions=__version__,
        device_serial_number="0",
        content_description="Breast mass segmentation (mammoseg)",
        content_label="MASS",
        # Keep the frame even when empty, so every input gets a SEG a viewer can open.
        omit_empty_frames=False,
    )


def write_dicom_seg(mask: np.ndarray, source: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Build the SEG for `mask` and write it to `path` atomically; returns the path."""
    seg = build_dicom_seg(mask, source, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return path
