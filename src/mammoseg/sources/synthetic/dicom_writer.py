"""Writing the synthetic phantoms as real DICOM: stored values, tags, photometric, VOI, UIDs.

Images are MG (12-14 bit, MONOCHROME1 or MONOCHROME2): For Presentation with their VOI as
one window, two windows or a VOI LUT Sequence, or For Processing with no VOI at all (the
standard allows a VOI only on For Presentation images). CBIS-DDSM crops and ROI masks are
secondary captures. Every object passes dciodvfy without errors and carries what vendors
write, so reading them back exercises the same code as real data.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mammoseg.dicom.codes import (
    BREAST,
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    SECONDARY_CAPTURE,
    VIEW_CODES,
    Code,
    mammo_patient_orientation,
)
from mammoseg.io import atomic_path
from mammoseg.sources.synthetic.acquisition import MANUFACTURER, Acquisition, set_acquisition_attributes


@dataclass(frozen=True)
class Encoding:
    """How one phantom is stored: bit depth, photometric interpretation, VOI and intent.

    `voi` is `window` (one LINEAR window), `windows` (two windows; the first covers the
    breast), `lut` (VOI LUT Sequence) or `none`.
    """

    bits: int = 14
    photometric: str = "MONOCHROME2"
    voi: str = "window"
    intent: str = "FOR PRESENTATION"
    spacing: float = 0.085
    lut_bits: int = 16

    @property
    def sop_class(self) -> str:
        """The MG SOP class that matches `intent`."""
        return MG_FOR_PROCESSING if self.intent == "FOR PROCESSING" else MG_FOR_PRESENTATION


def to_stored_values(
    image: np.ndarray, encoding: Encoding, rng: np.random.Generator
) -> np.ndarray:
    """Quantise a 0..1 density image to `encoding.bits`-bit stored values (uint16).

    MONOCHROME2 stores density directly (air dark); MONOCHROME1 stores the inverse, so a
    reader that inverts MONOCHROME1 after the VOI sees dense tissue bright either way.
    """
    top = (1 << encoding.bits) - 1
    offset = rng.uniform(0.01, 0.05) * top
    gain = rng.uniform(0.85, 0.94) * top
    values = np.rint(np.float32(offset) + image * np.float32(gain))
    np.clip(values, 0, top, out=values)
    stored = values.astype(np.uint16)
    if encoding.photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    return stored


def tissue_window(stored: np.ndarray, breast: np.ndarray, bits: int) -> tuple[int, int]:
    """Stored-value range a window should show: 0.5th percentile to maximum of the breast, widened 3 %.

    The top is the maximum, not a percentile: masses are often the densest spots and
    must not be clipped by the window that is meant to show them.
    """
    if not breast.any():
        breast = np.ones(stored.shape, dtype=bool)
    step = max(1, int(max(stored.shape) // 1024))  # a percentile of a subsample is plenty
    sample = stored[::step, ::step][breast[::step, ::step]]
    lo = float(np.percentile(sample, 0.5)) if sample.size else float(stored[breast].min())
    hi = float(stored[breast].max())
    pad = 0.03 * max(hi - lo, 1.0)
    top = (1 << bits) - 1
    lo_i, hi_i = int(max(0, math.floor(lo - pad))), int(min(top, math.ceil(hi + pad)))
    return lo_i, max(hi_i, lo_i + 1)


def _window_center_width(lo: int, hi: int) -> tuple[float, float]:
    # DICOM LINEAR: the window runs from c - 0.5 - (w - 1)/2 to c - 0.5 + (w - 1)/2.
    width = hi - lo + 1
    return round(lo + 0.5 + (width - 1) / 2, 1), float(width)


def _voi_lut_item(lo: int, hi: int, lut_bits: int) -> Dataset:
    """A VOI LUT Sequence item mapping stored lo..hi through a gentle S-curve to 0..2^lut_bits-1."""
    n = hi - lo + 1
    u = np.linspace(0.0, 1.0, n)
    k = 2.5
    curve = (np.tanh(k * (u - 0.5)) / math.tanh(k / 2) + 1.0) / 2.0
    data = np.rint(curve * ((1 << lut_bits) - 1)).astype("<u2")
    item = Dataset()
    item.add_new(0x00283002, "US", [n if n < 65536 else 0, lo, lut_bits])  # LUT Descriptor
    item.add_new(0x00283003, "LO", "MAMMOSEG S-CURVE")  # LUT Explanation
    item.add_new(0x00283006, "OW", data.tobytes())  # LUT Data
    return item


def _code_item(code: Code) -> Dataset:
    """A code sequence item (value, scheme, meaning)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


@dataclass(frozen=True)
class DicomInfo:
    """Identity and context of one DICOM file (everything but the pixels).

    `sop_class` empty means the MG class of the encoding's intent; SECONDARY_CAPTURE marks
    the derived objects (CBIS-DDSM crops and ROI masks). `acquisition` (device and exposure)
    is written for mammograms when given.
    """

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    laterality: str = ""
    view: str = ""
    study_date: str = "20160720"
    series_description: str = "synthetic mammogram"
    series_number: int = 1
    instance_number: int = 1
    sop_class: str = ""
    acquisition: Acquisition | None = None


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    info: DicomInfo,
    encoding: Encoding,
    window: tuple[int, int] | None = None,
) -> None:
    """Write `pixels` (uint16 stored values, or uint8 for masks) as a DICOM file, atomically.

    `window` is the (lo, hi) stored-value range the VOI should show; it is ignored when
    `encoding.voi == "none"`. The object passes dciodvfy without errors: MG images carry the
    Mammography, DX and acquisition modules a vendor writes, secondary captures the SC ones.
    """
    sop_class = info.sop_class or encoding.sop_class
    if sop_class != SECONDARY_CAPTURE and encoding.intent == "FOR PRESENTATION" and (
        encoding.voi == "none" or window is None
    ):
        raise ValueError(f"{path}: a For Presentation mammogram needs a VOI (window or VOI LUT)")
    ds = _file_dataset(path, info, sop_class)
    _set_patient_study_series(ds, info)
    if sop_class == SECONDARY_CAPTURE:
        _set_secondary_capture(ds, info)
    else:
        _set_mammography(ds, info, encoding)
    spacing = f"{encoding.spacing:.4f}".rstrip("0").rstrip(".")
    ds.PixelSpacing = [spacing, spacing]
    bits = 8 if pixels.dtype == np.uint8 else encoding.bits
    ds.set_pixel_data(pixels, encoding.photometric, bits, generate_instance_uid=False)
    if sop_class != SECONDARY_CAPTURE:
        # Type 1 in the DX Image module; identity rescale, so stored values are the modality values.
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        if encoding.intent == "FOR PRESENTATION" and window is not None:  # (never None: checked above)
            _set_voi(ds, encoding, window)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _file_dataset(path: str | os.PathLike, info: DicomInfo, sop_class: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = info.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = info.sop_uid
    return ds


def _set_patient_study_series(ds: Dataset, info: DicomInfo) -> None:
    """Patient, study, series and equipment attributes every object carries."""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "MG"
    ds.Manufacturer = MANUFACTURER
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = info.series_description
    ds.PatientName = f"{info.patient_id}^"  # an ID as the family name: one-component names are a retired form
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.BodyPartExamined = "BREAST"
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = info.series_number
    ds.InstanceNumber = info.instance_number
    ds.BurnedInAnnotation = "NO"
    if info.laterality:
        ds.ImageLaterality = info.laterality  # image level; series Laterality is only for when this is absent
    orientation = mammo_patient_orientation(info.laterality, info.view)
    ds.PatientOrientation = orientation or ""


def _set_secondary_capture(ds: Dataset, info: DicomInfo) -> None:
    """SC Equipment and image attributes of a derived object (crop or ROI mask)."""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.DerivationDescription = info.series_description


def _set_mammography(ds: Dataset, info: DicomInfo, encoding: Encoding) -> None:
    """Mammography, DX image, anatomy, positioning and detector attributes (Type 1 and 2, and vendors' usual 3)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = encoding.intent
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.OrganExposed = "BREAST"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = ""
    ds.AnatomicRegionSequence = [_code_item(BREAST)]
    ds.AcquisitionContextSequence = []
    ds.QualityControlImage = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LOG"
    # -1: higher stored values mean less X-ray intensity (denser), as MONOCHROME2 shows it.
    ds.PixelIntensityRelationshipSign = -1 if encoding.photometric == "MONOCHROME2" else 1
    # The DX Image module ties the shape to the photometric: INVERSE exactly for MONOCHROME1.
    ds.PresentationLUTShape = "INVERSE" if encoding.photometric == "MONOCHROME1" else "IDENTITY"
    ds.AcquisitionDate, ds.AcquisitionTime = info.study_date, "120000"
    if info.view:
        # Vendors write CC/MLO here although they are not DX defined terms (dciodvfy warns);
        # readers rely on it, and the View Code Sequence says the same in codes.
        ds.ViewPosition = info.view
        item = _code_item(VIEW_CODES[info.view])
        item.ViewModifierCodeSequence = []
        ds.ViewCodeSequence = [item]
    spacing = f"{encoding.spacing:.4f}".rstrip("0").rstrip(".")
    ds.ImagerPixelSpacing = [spacing, spacing]
    if info.acquisition is not None:
        set_acquisition_attributes(ds, info.acquisition)


def _set_voi(ds: Dataset, encoding: Encoding, window: tuple[int, int]) -> None:
    """The VOI of a For Presentation image: one or two windows, or a VOI LUT Sequence."""
    lo, hi = window
    if encoding.voi == "lut":
        ds.VOILUTSequence = [_voi_lut_item(lo, hi, encoding.lut_bits)]
        return
    center, width = _window_center_width(lo, hi)
    if encoding.voi == "windows":
        # A second, narrower window on the dense end; readers use the first by default.
        dense_lo = (lo + hi) // 2 if encoding.photometric == "MONOCHROME2" else lo
        dense_hi = hi if encoding.photometric == "MONOCHROME2" else (lo + hi) // 2
        c2, w2 = _window_center_width(dense_lo, dense_hi)
        ds.WindowCenter, ds.WindowWidth = [center, c2], [width, w2]
        ds.WindowCenterWidthExplanation = ["TISSUE", "DENSE"]
    else:
        ds.WindowCenter, ds.WindowWidth = center, width
        ds.WindowCenterWidthExplanation = "TISSUE"
    ds.VOILUTFunction = "LINEAR"


def stable_uid(seed: int, fmt: str, shape: tuple[int, int], *parts: object) -> str:
    """A DICOM UID that is the same on every rerun with the same seed, format and shape."""
    sources = ["mammoseg-synth", str(seed), fmt, f"{shape[0]}x{shape[1]}", *map(str, parts)]
    return str(generate_uid(entropy_srcs=sources))

