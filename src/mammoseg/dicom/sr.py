"""Mass measurements as a DICOM Structured Report (TID 1500 Measurement Report), beside the SEG.

Why: a radiologist's reading room shows an SR's findings next to the image, and a report or
registry takes its numbers from it; a mask alone says neither how large a mass is nor how
sure the models were. The report (a Comprehensive 3D SR, built with highdicom's
`highdicom.sr` templates) holds, for the image:

- per mass (`mammoseg.masses.find_masses`: a connected component of the mask) one Planar ROI
  group (TID 1410), tracking identifier "Mass <n>", finding type SCT 4147007 Mass, finding
  site Breast (with the image's laterality), referencing segment 1 of the image's SEG (which
  references the source image), with the measurements Area (SCT 42798000, mm²), Diameter
  (SCT 81827009) with derivation Maximum (the max Feret diameter, mm), the centroid row and
  column and the bounding box (top, left, height, width; in pixels, codes of the local scheme
  `99MAMMOSEG`), and the mean probability inside it (`99MAMMOSEG` "MEANPROB", no unit);
- one image-level group (TID 1501) with the qualitative evaluation Mass: Present or Absent
  (SCT 52101004 / 272519000), the number of masses, and the source image: "no mass found"
  is an explicit finding, not a missing report;
- in every group a Comment (DCM 121106) saying which spacing the millimetres come from
  (`measurement_spacing`): Imager Pixel Spacing is the detector plane, not corrected for
  the geometric magnification of the breast; without a spacing, sizes are in pixels only.

The algorithm (mammoseg, its version and the run identity of the SEG, `SegIdentity`) is the
observer device and each group's Algorithm Identification, so a rerun can recognise its
own SR (`sr_identity`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mammoseg.dicom.seg import SegIdentity, require_highdicom, save_atomic, source_header
from mammoseg.masses import Mass
from mammoseg.version import __version__

#: Series number of mammoseg's SR series (the SEG's is 9001).
SR_SERIES_NUMBER = 9002
#: The local coding scheme of the measurements DICOM has no code for.
LOCAL_SCHEME = "99MAMMOSEG"
_LOCAL = {
    "centroid_row": ("CENTROIDROW", "Centroid row"),
    "centroid_col": ("CENTROIDCOL", "Centroid column"),
    "bbox_top": ("BBOXTOP", "Bounding box top row"),
    "bbox_left": ("BBOXLEFT", "Bounding box left column"),
    "bbox_height": ("BBOXHEIGHT", "Bounding box height"),
    "bbox_width": ("BBOXWIDTH", "Bounding box width"),
    "mean_probability": ("MEANPROB", "Mean mass probability"),
    "n_masses": ("NMASSES", "Number of masses"),
}
NOTE_IMAGER = ("Measured in the detector plane (Imager Pixel Spacing), not corrected for the "
               "geometric magnification of the breast.")
NOTE_PIXEL = ("Measured with Pixel Spacing as the image header gives it; for a projection mammogram "
              "usually the detector plane, not corrected for the geometric magnification of the breast.")
NOTE_NONE = "The image header gives no pixel spacing: sizes are in pixels only."


@dataclass(frozen=True)
class Spacing:
    """The (row, column) mm per pixel the measurements use, the attribute it came from, and the SR's note."""

    mm: tuple[float, float] | None
    attribute: str  # "PixelSpacing", "ImagerPixelSpacing" or ""
    note: str


def measurement_spacing(source: Any) -> Spacing:
    """Pixel Spacing, else Imager Pixel Spacing (the reader's order, `dicom.reader`), with its caveat."""
    for keyword, note in (("PixelSpacing", NOTE_PIXEL), ("ImagerPixelSpacing", NOTE_IMAGER)):
        try:
            row, col = (float(v) for v in source.get(keyword) or ())
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0:
            return Spacing((row, col), keyword, note)
    return Spacing(None, "", NOTE_NONE)


def _code(key: str) -> Any:
    hd = require_highdicom()
    value, meaning = _LOCAL[key]
    return hd.sr.CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


def _unit(kind: str) -> Any:
    hd = require_highdicom()
    value, meaning = {"mm2": ("mm2", "square millimeter"), "mm": ("mm", "millimeter"),
                      "px": ("{pixels}", "pixels"), "px2": ("{pixels}", "pixels"), "1": ("1", "no units")}[kind]
    return hd.sr.CodedConcept(value=value, scheme_designator="UCUM", meaning=meaning)


def _comment(text: str) -> Any:
    hd = require_highdicom()
    return hd.sr.TextContentItem(name=codes.DCM.Comment, value=text,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _mass_measurements(mass: Mass, spacing: Spacing) -> list[Any]:
    """Area, maximum diameter, centroid, bounding box and mean probability of one mass."""
    hd = require_highdicom()
    area, area_unit = (mass.area_mm2, "mm2") if spacing.mm else (float(mass.area_px), "px2")
    diameter, diameter_unit = (mass.max_diameter_mm, "mm") if spacing.mm else (mass.max_diameter_px, "px")
    out = [hd.sr.Measurement(name=codes.SCT.Area, value=area, unit=_unit(area_unit)),
           hd.sr.Measurement(name=codes.SCT.Diameter, value=diameter, unit=_unit(diameter_unit),
                             derivation=codes.SCT.Maximum)]
    top, left, height, width = mass.bbox
    pixels = {"centroid_row": mass.centroid[0], "centroid_col": mass.centroid[1], "bbox_top": top,
              "bbox_left": left, "bbox_height": height, "bbox_width": width}
    out += [hd.sr.Measurement(name=_code(key), value=float(value), unit=_unit("px")) for key, value in pixels.items()]
    if mass.mean_probability is not None:
        out.append(hd.sr.Measurement(name=_code("mean_probability"), value=mass.mean_probability, unit=_unit("1")))
    return out


def _algorithm(identity: SegIdentity | None) -> Any:
    hd = require_highdicom()
    return hd.sr.AlgorithmIdentification(name=identity.algorithm_name if identity else "mammoseg",
                                         version=__version__,
                                         parameters=[f"{k}={v}" for k, v in identity.parameters.items()]
                                         if identity else None)


def _finding_site(source: Any) -> Any:
    hd = require_highdicom()
    side = str(source.get("ImageLaterality") or source.get("Laterality") or "").upper()
    laterality = {"L": codes.SCT.Left, "R": codes.SCT.Right}.get(side)
    return hd.sr.FindingSite(anatomic_location=codes.SCT.Breast, laterality=laterality)


def _mass_group(mass: Mass, seg: Any, source: Any, spacing: Spacing, identity: SegIdentity | None) -> Any:
    """TID 1410 for one mass, referencing segment 1 of the SEG (and through it the source image)."""
    hd = require_highdicom()
    segment = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, frame_number=1, segment_number=1,
        source_image=hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID))
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"Mass {mass.number}"),
        referenced_segment=segment, finding_type=codes.SCT.Mass, algorithm_id=_algorithm(identity),
        finding_sites=[_finding_site(source)], measurements=_mass_measurements(mass, spacing))
    group[0].ContentSequence.append(_comment(spacing.note))
    _segment_only(group[0])
    return group


def _segment_only(container: Any) -> None:
    """Reference the SEG by segment number alone: the SR Image Reference forbids a Referenced Segment
    Number beside a Referenced Frame Number (dciodvfy), which highdicom's ReferencedSegmentationFrame
    writes both of; the SEG has one frame per image, so the segment is the reference."""
    for item in container.ContentSequence:
        for reference in item.get("ReferencedSOPSequence") or []:
            if "ReferencedSegmentNumber" in reference and "ReferencedFrameNumber" in reference:
                del reference.ReferencedFrameNumber


def _image_group(masses: Sequence[Mass], source: Any, spacing: Spacing, identity: SegIdentity | None) -> Any:
    """TID 1501 for the image: mass present or absent (an explicit "no mass found"), and how many."""
    hd = require_highdicom()
    presence = codes.SCT.Present if masses else codes.SCT.Absent
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Image findings"),
        algorithm_id=_algorithm(identity), finding_sites=[_finding_site(source)],
        measurements=[hd.sr.Measurement(name=_code("n_masses"), value=float(len(masses)), unit=_unit("1"))],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=codes.SCT.Mass, value=presence)],
        source_images=[hd.sr.SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID)])
    group[0].ContentSequence.append(_comment(spacing.note if masses else "No mass found."))
    return group


def build_dicom_sr(masses: Sequence[Mass], source: Any, seg: Any, identity: SegIdentity | None = None,
                   sop_instance_uid: str | None = None, series_instance_uid: str | None = None) -> Any:
    """The Measurement Report (module docstring) of `masses` found on the image `source` (its pydicom
    header), referencing `seg` (the image's mammoseg SEG, a dataset: the masses are its segment 1).

    The masses must have been measured with `measurement_spacing(source)`; the SR's units follow it.
    """
    hd = require_highdicom()
    header = source_header(source)
    spacing = measurement_spacing(header)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_device_uid(), name=identity.algorithm_name if identity else "mammoseg", manufacturer_name="mammoseg",
            model_name="mammoseg fold ensemble"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Mammography,
        imaging_measurements=[_image_group(masses, header, spacing, identity),
                              *(_mass_group(m, seg, header, spacing, identity) for m in masses)])
    return hd.sr.Comprehensive3DSR(
        evidence=[header, seg], content=report[0], series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1,
        manufacturer="mammoseg", is_complete=True, is_final=False, is_verified=False,
        series_description=_series_description(identity), software_versions=__version__)


def _device_uid() -> str:
    """A UID for the device "mammoseg <version>": the same for every report of this version."""
    return generate_uid(entropy_srcs=["mammoseg", __version__])


def _series_description(identity: SegIdentity | None) -> str:
    if identity is None:
        return "mammoseg mass measurements"
    return f"mammoseg {identity.run_name} masses t={identity.threshold_text}"[:64]


def write_dicom_sr(masses: Sequence[Mass], source: Any, seg: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Build the SR (`build_dicom_sr`) and write it to `path` atomically; returns the path."""
    return save_atomic(build_dicom_sr(masses, source, seg, **kwargs), path)


def sr_identity(sr: Any) -> SegIdentity | None:
    """The run and threshold a mammoseg SR records (its groups' Algorithm Parameters); None for any other SR."""
    for item in _walk(sr):
        name = item.get("ConceptNameCodeSequence")
        if not name or str(name[0].get("CodeValue")) != "111001":  # DCM Algorithm Name
            continue
        text = str(item.get("TextValue", ""))
        if not text.startswith("mammoseg"):
            continue
        params = dict(str(p.get("TextValue", "")).split("=", 1) for p in _walk(sr)
                      if p.get("ConceptNameCodeSequence") and str(p.ConceptNameCodeSequence[0].CodeValue) == "111002"
                      and "=" in str(p.get("TextValue", "")))
        return SegIdentity.recorded(text, params)
    return None


def _walk(item: Any) -> list[Any]:
    out = []
    for child in item.get("ContentSequence") or []:
        out.append(child)
        out.extend(_walk(child))
    return out


def sr_references(sr: Any) -> frozenset[str]:
    """The SOP Instance UIDs an SR lists as its evidence (for mammoseg's: the source image and its SEG).

    Why: a rerun looks for "an SR of this image" on a server without reading the content tree; the
    evidence sequences name every instance the report's references point at.
    """
    uids = set()
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in sr.get(keyword) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                uids.update(str(item.get("ReferencedSOPInstanceUID", "")) for item in
                            series.get("ReferencedSOPSequence") or [])
    uids.discard("")
    return frozenset(uids)


def refer_to_seg(sr: Any, old_seg_uid: str, seg_uid: str, seg_series_uid: str) -> None:
    """Make `sr` reference the SEG `seg_uid` (of series `seg_series_uid`) instead of `old_seg_uid`, in place.

    Why: when the server already holds this run's SEG of the image (another SOP instance with the same
    pixels, stored by an earlier run), the SR stored beside it must point at that SEG, not at the
    local one that was not sent.
    """
    def swap(dataset: Any, element: Any) -> None:
        if element.keyword == "ReferencedSOPInstanceUID" and str(element.value) == old_seg_uid:
            element.value = seg_uid

    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in sr.get(keyword) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                if any(str(i.get("ReferencedSOPInstanceUID", "")) == old_seg_uid
                       for i in series.get("ReferencedSOPSequence") or []):
                    series.SeriesInstanceUID = seg_series_uid
    sr.walk(swap)
