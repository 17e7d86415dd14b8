"""Small mammography DICOMs for the tests: one builder instead of one per test file.

`mg_dataset` gives a single-frame MG For Presentation image in Explicit VR Little Endian
holding `pixels` exactly; `write_mg` saves one as a DICOM file. Anything else a test needs
(PatientID, laterality, windows, Study/Series UIDs...) is passed as a keyword named after the
DICOM keyword; it is set last, so it can also override what the builder set, and `None`
removes the attribute. Imported as `from dicom_factory import ...` (tests/ is on sys.path
under pytest's default rootdir-based import mode, tests/ having no __init__.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


def mg_dataset(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **attributes: Any,
) -> Dataset:
    """A minimal MG image (with file meta) holding `pixels`, one sample per pixel.

    uint8 pixels are stored in 8 bits allocated; any other integer array in 16, signed
    (Pixel Representation 1) only if it has a negative value. `bits_stored` defaults to the
    bits allocated; High Bit is one less. Values must fit `bits_stored`.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype.kind not in "iu":
        raise ValueError(f"pixels must be a 2-D integer array, got {pixels.dtype} {pixels.shape}")
    signed = bool(pixels.size and pixels.min() < 0)
    allocated = 8 if pixels.dtype == np.uint8 else 16
    stored = allocated if bits_stored is None else bits_stored
    if not 1 <= stored <= allocated:
        raise ValueError(f"bits_stored {stored} does not fit {allocated} bits allocated")
    lo, hi = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    if pixels.size and (pixels.min() < lo or pixels.max() > hi):
        raise ValueError(f"pixel values {pixels.min()}..{pixels.max()} do not fit {stored} bits stored")
    dtype = np.uint8 if allocated == 8 else np.int16 if signed else np.uint16

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = allocated
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()
    for keyword, value in attributes.items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def save_dataset(ds: Dataset, path: str | Path) -> Path:
    """Write `ds` as a DICOM file (preamble and file meta), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mg(
    path: str | Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **attributes: Any,
) -> Path:
    """`mg_dataset(pixels, photometric, bits_stored, **attributes)` saved at `path`."""
    return save_dataset(mg_dataset(pixels, photometric, bits_stored, **attributes), path)


def textured_breast(height: int, width: int, seed: int) -> np.ndarray:
    """A 12-bit breast against the left edge with texture and a brighter blob (uint16): an image whose
    prediction by a random-weight run is neither empty nor full."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    breast = ((yy - height / 2) / (height * 0.45)) ** 2 + (xx / (width * 0.8)) ** 2 <= 1
    pixels = np.where(breast, 1200 + rng.integers(0, 600, (height, width)), 0)
    pixels[(yy - height // 2) ** 2 + (xx - width // 4) ** 2 <= (height // 8) ** 2] += 1500
    return pixels.astype(np.uint16)


def annotation_seg(source: Dataset, segments: dict[str, np.ndarray], algorithm_type: str = "MANUAL") -> Dataset:
    """A BINARY DICOM SEG as an annotation tool writes it: one segment per `{label: mask}` on `source`.

    A label "Mass" is coded SCT 4147007 (Mass); any other label as a calcification cluster, so a
    reader must tell them apart by code, not by position.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions, planes = [], []
    for number, (label, mask) in enumerate(segments.items(), start=1):
        kind = codes.SCT.Mass if label == "Mass" else codes.SCT.CalcificationCluster
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=kind, algorithm_type=algorithm_type,
            algorithm_identification=None if algorithm_type == "MANUAL" else hd.AlgorithmIdentificationSequence(
                name="annotator", family=codes.cid7162.ArtificialIntelligence, version="1"),
        ))
        planes.append(np.asarray(mask, dtype=bool))
    header = Dataset()
    for element in source:
        if element.keyword != "PixelData":
            header.add(element)
    header.file_meta = source.file_meta
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
                    "StudyTime", "ReferringPhysicianName"):
        header.setdefault(keyword, "")  # Type 2 attributes the SEG copies
    return hd.seg.Segmentation(
        source_images=[header], pixel_array=np.stack(planes, axis=-1)[None], segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=300,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="annotation tool",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1",
        omit_empty_frames=False,
    )
