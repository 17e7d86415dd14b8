"""Predicted masks as DICOM Segmentation objects (BINARY), so PACS viewers can show them.

The SEG references its source image (study, series and SOP instance UIDs are taken
from the source header), holds one segment labelled "Mass" (SNOMED CT: Morphologically
abnormal structure / Mass), and says it was made by an AUTOMATIC algorithm, mammoseg.
Its Patient Orientation is the source's (or, for a mammogram without one, derived from
laterality and view), so the object passes dciodvfy without errors.

**Identity.** A SEG made for a run says which run and threshold made it (`SegIdentity`):
the segment's Algorithm Identification has Algorithm Name "mammoseg <run name>", Version
mammoseg's version, Source "mammoseg" and Algorithm Parameters
"run_id=<run id>,threshold=<threshold>"; the Series Description repeats name and
threshold for people. `seg_identity` reads it back, so a rerun can find what it stored
before (`mammoseg.dicomweb`) instead of storing a second SEG.

**Pixel Measures.** When the source has a Pixel Spacing, the SEG's Shared Functional Groups
carry it in a Pixel Measures Sequence, with a Slice Thickness (`slab_thickness`): the
source's own, else, for a projection radiograph (MG, DX), its Body Part Thickness. The
standard's Pixel Measures Macro defines Slice Thickness as the nominal thickness of the slab
for projection images, and a mammogram projects the whole compressed breast, whose thickness
the modality records there. Without either value the SEG carries no Pixel Measures at all
(Type 1C, not required: a SEG without a Volumetric Properties condition, and the source image
it references gives the spacing): spacing without a thickness would be conformant too, but
highdicom's `segread` refuses it, and an empty thickness is not conformant (Type 1C present
but empty). So every SEG opens in highdicom, pydicom and dcmtk and passes dciodvfy.
highdicom is an optional extra (`pip install mammoseg[dicom-seg]`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import iter_pixels
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

from mammoseg.dicom.bounded import DicomReadError, one_line, read_dicom
from mammoseg.dicom.checks import ReadLimits
from mammoseg.dicom.codes import mammo_patient_orientation
from mammoseg.dicom.codestream import check_codestreams
from mammoseg.io import atomic_path
from mammoseg.version import __version__

log = logging.getLogger(__name__)
# highdicom logs every module it copies at INFO (nine lines per SEG); mammoseg reports what matters itself.
if logging.getLogger("highdicom").level == logging.NOTSET:
    logging.getLogger("highdicom").setLevel(logging.WARNING)

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
#: Characters a run id may hold: it is written as `key=value` in a comma-separated list.
_RUN_ID = re.compile(r"^[A-Za-z0-9._:/+-]{1,128}$")


@dataclass(frozen=True)
class SegIdentity:
    """Which run made a SEG and at which threshold: what makes two SEGs "the same prediction".

    `run_id` identifies the trained models (e.g. a digest of the fold checkpoints), so a
    renamed run still matches; `run_name` is for people (viewers show the algorithm name).
    """

    run_name: str
    run_id: str
    threshold: float

    def __post_init__(self) -> None:
        if not _RUN_ID.match(self.run_id):
            raise ValueError(f"run id {self.run_id!r}: use 1-128 letters, digits or . _ : / + -")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    @property
    def threshold_text(self) -> str:
        """The threshold as written in the SEG: shortest form that round-trips (0.5, 0.35)."""
        return repr(float(self.threshold))

    @property
    def algorithm_name(self) -> str:
        return f"mammoseg {self.run_name}".strip()[:64]

    @property
    def parameters(self) -> dict[str, str]:
        return {"run_id": self.run_id, "threshold": self.threshold_text}

    @classmethod
    def recorded(cls, algorithm_name: str, parameters: Mapping[str, str]) -> SegIdentity | None:
        """The identity a SEG or SR recorded as its algorithm's name and parameters; None if incomplete."""
        try:
            return cls(algorithm_name.removeprefix("mammoseg").strip(), parameters["run_id"],
                       float(parameters["threshold"]))
        except (KeyError, ValueError):
            return None

    def matches(self, other: SegIdentity | None) -> bool:
        """Same run id and threshold (the name is only a label)."""
        return other is not None and other.run_id == self.run_id and other.threshold_text == self.threshold_text


def require_highdicom() -> Any:
    """Import highdicom, or explain how to install the optional extra."""
    try:
        import highdicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DICOM Segmentation output needs highdicom: pip install mammoseg[dicom-seg]"
        ) from exc
    return highdicom


def source_header(source: Any) -> Any:
    """A copy of the source header without pixel data, with empty Type 2 attributes filled in."""
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
    identity: SegIdentity | None = None,
) -> Any:
    """A highdicom `Segmentation` (BINARY, one segment "Mass") of `mask` on the source's grid.

    `mask` is 2-D, on the source image's pixel grid (Rows x Columns), nonzero = mass.
    `source` is the source image's pydicom Dataset (pixel data not needed). `identity`
    (run and threshold) is recorded as the module docstring says.
    """
    hd = require_highdicom()
    header = source_header(source)
    where = getattr(source, "filename", None) or "source DICOM"
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != (int(header.Rows), int(header.Columns)):
        raise ValueError(
            f"{where}: mask shape {mask.shape} does not match the image ({header.Rows} x {header.Columns})"
        )
    measures = _pixel_measures(hd, header)
    with _quiet_person_names(where):
        seg = _segmentation(hd, header, mask, identity, (series_instance_uid, series_number),
                            (sop_instance_uid, instance_number), measures)
    # General Image, Type 2C for images without Image Orientation (Patient), as every 2-D mammogram.
    seg.PatientOrientation = source_patient_orientation(header)
    seg.SeriesDescription = _series_description(identity)
    return seg


@contextlib.contextmanager
def _quiet_person_names(where: str) -> Iterator[None]:
    """highdicom warns (a multi-line UserWarning, once per SEG) about single-component patient names
    such as CBIS-DDSM's `Mass-Test_P_00820_RIGHT_MLO`; the name is copied unchanged all the same, so the
    warning is logged at debug level instead of printed between progress lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        if "person name" in str(warning.message):
            log.debug("%s: %s", where, warning.message)
        else:  # anything else is still said, once, as a warning
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


#: Modalities whose images are projections through the body part (Body Part Thickness = the slab).
PROJECTION_MODALITIES = ("MG", "DX")


def _positive_mm(value: Any) -> float | None:
    """A DS value as a positive finite number of mm, or None (absent, empty, malformed)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def slab_thickness(source: Any) -> float | None:
    """The Slice Thickness the SEG's Pixel Measures record (module docstring), in mm, or None.

    The source's Slice Thickness, else, for a single-frame projection image (MG, DX), its Body
    Part Thickness (0018,11A0): the compressed breast the X-rays traversed, i.e. the slab.
    """
    thickness = _positive_mm(source.get("SliceThickness"))
    if thickness is None and str(source.get("Modality", "")).upper() in PROJECTION_MODALITIES \
            and int(source.get("NumberOfFrames") or 1) == 1:
        thickness = _positive_mm(source.get("BodyPartThickness"))
    return thickness


def _pixel_measures(hd: Any, header: Dataset) -> Any:
    """The Pixel Measures Sequence of the SEG, or None; without a thickness the spacing is dropped from
    `header` (a copy), so highdicom writes no Pixel Measures (module docstring)."""
    if "PixelSpacing" not in header:
        return None
    spacing = [_positive_mm(v) for v in header.PixelSpacing] if header.PixelSpacing else []
    thickness = slab_thickness(header)
    if thickness is None or len(spacing) != 2 or None in spacing:
        del header.PixelSpacing
        return None
    return hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=thickness)


def _segmentation(hd: Any, header: Dataset, mask: np.ndarray, identity: SegIdentity | None,
                  series: tuple[str | None, int], instance: tuple[str | None, int], measures: Any = None) -> Any:
    """highdicom's Segmentation of the mask (its arguments only)."""
    (series_instance_uid, series_number), (sop_instance_uid, instance_number) = series, instance
    return hd.seg.Segmentation(
        source_images=[header],
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_mass_segment(hd, identity)],
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
        pixel_measures=measures,
    )


def _mass_segment(hd: Any, identity: SegIdentity | None) -> Any:
    """Segment 1, "Mass" (SCT 4147007), AUTOMATIC, identified as mammoseg (and the run, when given)."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=identity.algorithm_name if identity else "mammoseg",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        source="mammoseg",
        parameters=identity.parameters if identity else None,
    )
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Mass,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def source_patient_orientation(source: Any) -> list[str] | str:
    """The source's Patient Orientation, else the mammographic one of its laterality and view, else empty."""
    value = source.get("PatientOrientation")
    if value:
        return list(value) if not isinstance(value, str) else value
    laterality = str(source.get("ImageLaterality") or source.get("Laterality") or "")
    view = str(source.get("ViewPosition") or "")
    return mammo_patient_orientation(laterality, view) or ""


def _series_description(identity: SegIdentity | None) -> str:
    if identity is None:
        return "mammoseg mass segmentation"
    return f"mammoseg {identity.run_name} mass t={identity.threshold_text}"[:64]


def seg_identity(seg: Any) -> SegIdentity | None:
    """The run and threshold a mammoseg SEG records (module docstring); None for any other SEG."""
    for segment in seg.get("SegmentSequence") or []:
        for algorithm in segment.get("SegmentationAlgorithmIdentificationSequence") or []:
            if str(algorithm.get("AlgorithmSource", "")) != "mammoseg":
                continue
            params = dict(
                part.split("=", 1) for part in str(algorithm.get("AlgorithmParameters", "")).split(",") if "=" in part
            )
            return SegIdentity.recorded(str(algorithm.get("AlgorithmName", "")), params)
    return None


def referenced_instances(seg: Any) -> set[str]:
    """SOP Instance UIDs of the images a SEG references (its Referenced Series Sequence)."""
    return {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence") or []
        for item in series.get("ReferencedInstanceSequence") or []
        if "ReferencedSOPInstanceUID" in item
    }


def write_dicom_seg(mask: np.ndarray, source: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Build the SEG for `mask` and write it to `path` atomically; returns the path."""
    return save_atomic(build_dicom_seg(mask, source, **kwargs), path)


def save_atomic(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write a DICOM file atomically (no half-written file under its name); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


#: Segmented Property Type of a mass (SNOMED CT 4147007).
MASS_CODE = ("4147007", "SCT")
#: Segment Algorithm Types whose segments count as reference annotations (not predictions).
REFERENCE_ALGORITHM_TYPES = ("MANUAL", "SEMIAUTOMATIC")


def mass_segment_numbers(seg: Any, algorithm_types: tuple[str, ...] = REFERENCE_ALGORITHM_TYPES) -> tuple[int, ...]:
    """Numbers of the SEG's mass segments made by one of `algorithm_types`.

    A mass is a segment whose Segmented Property Type is SNOMED CT 4147007 (Mass) or whose
    label is "Mass". Only MANUAL and SEMIAUTOMATIC segments count by default, so a
    prediction stored back to the archive is never taken for a reference annotation.
    """
    numbers = []
    for segment in seg.get("SegmentSequence") or []:
        codes = segment.get("SegmentedPropertyTypeCodeSequence") or []
        is_mass = any((str(c.get("CodeValue", "")), str(c.get("CodingSchemeDesignator", ""))) == MASS_CODE
                      for c in codes)
        is_mass = is_mass or str(segment.get("SegmentLabel", "")).strip().lower() == "mass"
        if is_mass and str(segment.get("SegmentAlgorithmType", "")).upper() in algorithm_types:
            numbers.append(int(segment.SegmentNumber))
    return tuple(numbers)


def read_seg_mask(path: str | os.PathLike, sop_instance_uid: str, segment_numbers: tuple[int, ...],
                  height: int, width: int) -> np.ndarray:
    """Union of `segment_numbers` of the SEG at `path` on the image `sop_instance_uid`, as bool H x W.

    Frames are matched to the image through their Derivation Image Sequence (per frame, or
    shared; a SEG of a single image may omit it). Read with pydicom: highdicom 0.28 refuses a
    Pixel Measures without Slice Thickness, which other writers (highdicom itself, for a 2-D image
    with Pixel Spacing only) produce. A FRACTIONAL segment counts where it reaches half its maximum. An image the SEG references but has no frame for (an
    empty frame left out) gets an empty mask. The file is read within the default `ReadLimits`
    (`mammoseg.dicom.bounded`), its frame size is checked before decoding, and only the wanted
    frames are decoded, one at a time (compressed ones after their codestream headers are
    checked), so a hostile SEG costs at most one image-sized frame of memory.
    """
    seg = read_dicom(path, ReadLimits())
    try:
        rows, columns = int(seg.Rows), int(seg.Columns)
        index = _frame_sources(seg)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the SEG frames ({type(exc).__name__}: {one_line(exc)})") from exc
    if sop_instance_uid not in referenced_instances(seg):
        raise ValueError(f"{path}: the SEG does not reference image {sop_instance_uid}")
    if (rows, columns) != (height, width):  # before decoding: frames of another size are never decoded
        raise ValueError(f"{path}: SEG frames are {rows}x{columns} but image {sop_instance_uid} is {height}x{width}")
    wanted = [i for i, (source, number) in enumerate(index) if source == sop_instance_uid and number in segment_numbers]
    fractional = str(seg.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    cut = (int(seg.get("MaximumFractionalValue", 255)) + 1) // 2 if fractional else 1
    mask = np.zeros((height, width), dtype=bool)
    if not wanted:
        return mask
    try:
        for frame in _decoded_frames(seg, Path(path), wanted):
            mask |= frame >= cut
    except DicomReadError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the SEG frames ({type(exc).__name__}: {one_line(exc)})") from exc
    return mask


def _decoded_frames(seg: Dataset, path: Path, wanted: list[int]) -> Iterator[np.ndarray]:
    """Frames `wanted` of a SEG, decoded one at a time (compressed ones after their codestream check).

    Uncompressed 1-bit frames are unpacked here: pydicom 3.0's `iter_pixels` misplaces a frame
    whose pixel count is not a multiple of 8 (bit-packed frames are not byte-aligned).
    """
    rows, columns = int(seg.Rows), int(seg.Columns)
    meta = getattr(seg, "file_meta", None)
    tsyntax = UID(str(meta.get("TransferSyntaxUID", "") if meta is not None else ""))
    if tsyntax.is_encapsulated:
        check_codestreams(seg, path, tsyntax, ReadLimits())
    if tsyntax.is_encapsulated or int(seg.BitsAllocated) != 1:
        for frame in iter_pixels(seg, indices=wanted):
            yield np.asarray(frame).reshape(rows, columns)
        return
    count, data = rows * columns, seg.PixelData
    for index in wanted:
        first = index * count  # the frame's first bit
        packed = np.frombuffer(data, np.uint8, count=(first % 8 + count + 7) // 8, offset=first // 8)
        bits = np.unpackbits(packed, bitorder="little")  # DICOM packs the first pixel in the lowest bit
        yield bits[first % 8 : first % 8 + count].reshape(rows, columns)


def _frame_sources(seg: Any) -> list[tuple[str, int]]:
    """(source SOP Instance UID, segment number) of every frame of a SEG."""
    shared = (seg.get("SharedFunctionalGroupsSequence") or [None])[0]
    referenced = referenced_instances(seg)
    only = next(iter(referenced)) if len(referenced) == 1 else ""
    out = []
    for frame in seg.get("PerFrameFunctionalGroupsSequence") or []:
        source = _derivation_source(frame) or (_derivation_source(shared) if shared is not None else "") or only
        ident = frame.get("SegmentIdentificationSequence") or (shared.get("SegmentIdentificationSequence")
                                                               if shared is not None else None)
        out.append((source, int(ident[0].ReferencedSegmentNumber)))
    return out


def _derivation_source(group: Any) -> str:
    """The source image of a functional group's Derivation Image Sequence ('' if none); refuses moved pixels."""
    for derivation in group.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            if str(source.get("SpatialLocationsPreserved", "YES")).upper() == "NO":
                raise ValueError(f"frames of image {source.get('ReferencedSOPInstanceUID')} do not preserve "
                                 "its pixel locations")
            return str(source.get("ReferencedSOPInstanceUID", ""))
    return ""
