"""Codes and conventions of mammography DICOM, shared by every writer of DICOM in mammoseg.

The synthetic image writer and the SEG builder must agree with each other and with what
vendors write: SNOMED CT codes for the breast and the views (DICOM PS3.16 CID 4014 and
CID 4031), the SOP classes, and the Patient Orientation of each standard view (PS3.3
C.8.11.7.1.x: rows run towards the nipple, columns foot- or head-ward, so the chest wall
of a left breast lies at the left edge).
"""

from __future__ import annotations

from typing import NamedTuple

#: DICOM SOP classes mammoseg reads or writes.
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"


class Code(NamedTuple):
    """A coded concept: (value, scheme designator, meaning)."""

    value: str
    scheme: str
    meaning: str


#: Anatomic Region Sequence of every mammogram (CID 4031).
BREAST = Code("76752008", "SCT", "Breast")

#: View Code Sequence item per view (CID 4014).
VIEW_CODES: dict[str, Code] = {
    "CC": Code("399162004", "SCT", "cranio-caudal"),
    "MLO": Code("399368009", "SCT", "medio-lateral oblique"),
    "ML": Code("399260004", "SCT", "medio-lateral"),
    "LM": Code("399352003", "SCT", "latero-medial"),
}

#: Patient Orientation (row direction, column direction) of the standard views.
_ORIENTATION: dict[tuple[str, str], tuple[str, str]] = {
    ("L", "CC"): ("A", "R"),
    ("R", "CC"): ("P", "L"),
    ("L", "MLO"): ("A", "FR"),
    ("R", "MLO"): ("P", "FL"),
    ("L", "ML"): ("A", "F"),
    ("R", "ML"): ("P", "F"),
    ("L", "LM"): ("P", "F"),
    ("R", "LM"): ("A", "F"),
}


def mammo_patient_orientation(laterality: str, view: str) -> list[str]:
    """Patient Orientation of a mammogram of `laterality` (L/R) and `view` (CC, MLO...); [] if unknown."""
    pair = _ORIENTATION.get((laterality.strip().upper(), view.strip().upper()))
    return list(pair) if pair else []
