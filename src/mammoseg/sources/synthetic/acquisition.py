"""How a synthetic mammogram was "acquired": the device profile and the exposure of one view.

Why: readers, viewers and PACS rules look at more than pixels. Real For Presentation
mammograms carry the equipment (model, detector type and ID), the positioner (MAMMOGRAPHIC,
angle, compression force, compressed thickness) and the exposure (kVp, mAs, anode/filter,
dose); the synthetic ones carry the same attributes with plausible values, in the style of
three common full-field digital systems. Manufacturer stays "mammoseg synthetic phantom"
so a synthetic object can never pass for a clinical one; the model name says which
system's style it follows.

Every value is drawn from its own generator seeded by (seed, patient, side, view), apart
from the generators that decide the pixels, so adding or changing an attribute here never
changes the images of a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MANUFACTURER = "mammoseg synthetic phantom"


@dataclass(frozen=True)
class DeviceProfile:
    """The fixed attributes of one style of mammography system."""

    model: str
    software: str
    detector_type: str  # DIRECT (a-Se) or SCINTILLATOR (CsI on a-Si)
    detector_id: str
    anode: str
    filters: tuple[str, ...]  # one is picked per exposure
    kvp: tuple[float, float]  # at 30 mm and at 80 mm compressed thickness
    source_to_detector_mm: float
    support_gap_mm: float  # breast support to detector


HOLOGIC_STYLE = DeviceProfile(
    "synthetic, Hologic Selenia Dimensions style", "1.11.0.8", "DIRECT", "SDSYN0001",
    "TUNGSTEN", ("RHODIUM",), (25.0, 34.0), 700.0, 25.0,
)
GE_STYLE = DeviceProfile(
    "synthetic, GE Senographe Essential style", "ADS_54.20", "SCINTILLATOR", "ESSYN0002",
    "RHODIUM", ("RHODIUM", "MOLYBDENUM"), (26.0, 31.0), 660.0, 20.0,
)
SIEMENS_STYLE = DeviceProfile(
    "synthetic, Siemens MammoNovation style", "VB20A", "DIRECT", "MNSYN0003",
    "MOLYBDENUM", ("MOLYBDENUM", "RHODIUM"), (25.0, 31.0), 650.0, 20.0,
)


@dataclass(frozen=True)
class Acquisition:
    """Device and exposure of one image."""

    device: DeviceProfile
    thickness_mm: float
    force_n: float
    kvp: float
    tube_current_ma: int
    exposure_time_ms: int
    filter: str
    organ_dose_mgy: float
    entrance_dose_mgy: float
    primary_angle: float

    @property
    def exposure_mas(self) -> float:
        return self.tube_current_ma * self.exposure_time_ms / 1000.0


def device_for(fmt: str, patient_index: int) -> DeviceProfile:
    """INbreast was acquired on one Siemens system; the other layouts alternate by patient."""
    if fmt == "inbreast":
        return SIEMENS_STYLE
    return HOLOGIC_STYLE if patient_index % 2 == 0 else GE_STYLE


def draw_acquisition(seed: int, patient_index: int, side: int, view: str, device: DeviceProfile) -> Acquisition:
    """The exposure of one view: thicker breasts get more kVp and mAs, MLO a little thicker."""
    breast_rng = np.random.default_rng([seed, 106, patient_index, side])
    thickness = float(breast_rng.uniform(35.0, 70.0))  # shared by both views of the breast
    rng = np.random.default_rng([seed, 107, patient_index, side, 0 if view == "CC" else 1])
    if view != "CC":
        thickness += float(rng.uniform(2.0, 8.0))
    t = (thickness - 30.0) / 50.0
    low, high = device.kvp
    current = int(rng.integers(100, 200))
    mas = 60.0 + 140.0 * t * float(rng.uniform(0.8, 1.2))
    angle = 0.0 if view == "CC" else (45.0 if side == 0 else -45.0)
    return Acquisition(
        device=device, thickness_mm=round(thickness), force_n=round(float(rng.uniform(60.0, 140.0)), 1),
        kvp=round(low + (high - low) * t), tube_current_ma=current,
        exposure_time_ms=int(round(mas / current * 1000.0)), filter=str(rng.choice(device.filters)),
        organ_dose_mgy=round(0.8 + 1.6 * t * float(rng.uniform(0.8, 1.2)), 2),
        entrance_dose_mgy=round(3.0 + 7.0 * t * float(rng.uniform(0.8, 1.2)), 2), primary_angle=angle,
    )


def set_acquisition_attributes(ds: Dataset, acq: Acquisition) -> None:
    """Equipment, detector, positioner, generation, filtration and dose attributes of `acq`."""
    device = acq.device
    ds.ManufacturerModelName = device.model
    ds.SoftwareVersions = device.software
    ds.DeviceSerialNumber = device.detector_id
    ds.StationName = "MAMMOSEG-SYN"
    ds.DetectorType = device.detector_type
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = device.detector_id
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.PositionerPrimaryAngle = acq.primary_angle
    ds.BodyPartThickness = acq.thickness_mm
    ds.CompressionForce = acq.force_n
    ds.KVP = acq.kvp
    ds.XRayTubeCurrent = acq.tube_current_ma
    ds.ExposureTime = acq.exposure_time_ms
    ds.Exposure = int(round(acq.exposure_mas))
    ds.ExposureInuAs = int(round(acq.exposure_mas * 1000))
    ds.AnodeTargetMaterial = device.anode
    ds.FilterMaterial = acq.filter
    ds.FocalSpots = 0.3
    ds.Grid = "RECIPROCATING"
    ds.DistanceSourceToDetector = device.source_to_detector_mm
    source_to_breast = device.source_to_detector_mm - device.support_gap_mm - acq.thickness_mm
    ds.DistanceSourceToPatient = source_to_breast
    ds.EstimatedRadiographicMagnificationFactor = round(device.source_to_detector_mm / source_to_breast, 6)
    ds.OrganDose = acq.organ_dose_mgy
    ds.EntranceDoseInmGy = acq.entrance_dose_mgy
