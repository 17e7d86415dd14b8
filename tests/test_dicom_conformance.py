"""Every kind of DICOM object mammoseg writes passes dciodvfy (dicom3tools) with 0 errors.

Synthetic MG images (For Presentation with each VOI kind, For Processing), the CBIS-DDSM
crops and ROI masks (secondary captures) of every layout, and SEGs. dciodvfy runs for real;
without it the tests skip on a developer's machine and fail under CI=true.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_validator import assert_conformant
from mammoseg.dicom.codes import MG_FOR_PRESENTATION, MG_FOR_PROCESSING, SECONDARY_CAPTURE
from mammoseg.sources.synthetic import write_synthetic_dataset

SHAPE = (160, 128)


def _kind(ds: pydicom.Dataset) -> str:
    if ds.SOPClassUID == SECONDARY_CAPTURE:
        return "SC " + str(ds.SeriesDescription)
    if ds.SOPClassUID == MG_FOR_PROCESSING:
        return "MG for processing"
    assert ds.SOPClassUID == MG_FOR_PRESENTATION
    return f"MG for presentation, {'VOI LUT' if 'VOILUTSequence' in ds else 'window'}"  # one or two windows


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("manifest", {"MG for presentation, window", "MG for presentation, VOI LUT", "MG for processing"}),
        ("inbreast", {"MG for processing"}),
        ("cbis-ddsm", {"MG for presentation, window", "MG for presentation, VOI LUT", "MG for processing",
                       "SC cropped images", "SC ROI mask images"}),
    ],
)
def test_every_synthetic_object_passes_dciodvfy(tmp_path, fmt, expected):
    summary = write_synthetic_dataset(tmp_path / fmt, patients=3, fmt=fmt, shape=SHAPE, seed=5, progress=False)
    files = [*summary.images, *(p for p in summary.annotations if p.suffix == ".dcm")]
    kinds: Counter[str] = Counter()
    for path in files:
        result = assert_conformant(path)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        kinds[_kind(ds)] += 1
        if ds.SOPClassUID != SECONDARY_CAPTURE:
            assert result.iod.startswith("MammographyImageFor"), result.report()
    assert expected <= set(kinds), kinds  # every kind the layout writes was among those checked
    assert sum(kinds.values()) == len(files)


def test_synthetic_mammogram_carries_what_vendors_write(tmp_path):
    summary = write_synthetic_dataset(tmp_path / "m", patients=2, fmt="manifest", shape=SHAPE, seed=3, progress=False)
    seen = set()
    for path in summary.images:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        seen.add(ds.PresentationIntentType)
        assert ds.PositionerType == "MAMMOGRAPHIC" and ds.OrganExposed == "BREAST" and ds.BodyPartExamined == "BREAST"
        assert ds.AnatomicRegionSequence[0].CodeValue == "76752008"
        assert ds.ViewCodeSequence[0].CodeValue == {"CC": "399162004", "MLO": "399368009"}[ds.ViewPosition]
        assert "ViewModifierCodeSequence" in ds.ViewCodeSequence[0] and "AcquisitionContextSequence" in ds
        assert "Laterality" not in ds and ds.ImageLaterality in ("L", "R")
        assert ds.PresentationLUTShape == ("INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY")
        assert (ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType) == (0, 1, "US")
        assert ds.LossyImageCompression == "00" and ds.BurnedInAnnotation == "NO" and ds.BreastImplantPresent == "NO"
        assert ds.DetectorType in ("DIRECT", "SCINTILLATOR") and ds.DetectorID
        assert 20 <= float(ds.KVP) <= 35 and float(ds.CompressionForce) > 0 and float(ds.BodyPartThickness) > 0
        has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
        assert has_voi == (ds.PresentationIntentType == "FOR PRESENTATION"), path
    assert seen == {"FOR PRESENTATION", "FOR PROCESSING"}


def _seg_of(source_path: Path, out: Path, **kwargs) -> Path:
    from mammoseg.dicom.seg import write_dicom_seg

    source = pydicom.dcmread(source_path)
    mask = np.zeros((source.Rows, source.Columns), dtype=bool)
    mask[40:70, 30:60] = True
    return write_dicom_seg(mask, source, out, **kwargs)


def test_seg_passes_dciodvfy_with_identity_and_orientation(tmp_path):
    pytest.importorskip("highdicom")
    from mammoseg.dicom.seg import SegIdentity

    summary = write_synthetic_dataset(tmp_path / "m", patients=1, fmt="manifest", shape=SHAPE, seed=3, progress=False)
    source = next(p for p in summary.images if pydicom.dcmread(p).SOPClassUID == MG_FOR_PRESENTATION)
    seg_path = _seg_of(source, tmp_path / "seg.dcm", identity=SegIdentity("demo run", "abc123", 0.5))
    result = assert_conformant(seg_path)
    assert result.iod == "Segmentation"
    seg = pydicom.dcmread(seg_path)
    assert list(seg.PatientOrientation) == list(pydicom.dcmread(source).PatientOrientation)


def test_seg_of_a_source_without_orientation_derives_it_and_passes(tmp_path):
    pytest.importorskip("highdicom")
    summary = write_synthetic_dataset(tmp_path / "m", patients=1, fmt="manifest", shape=SHAPE, seed=3, progress=False)
    ds = pydicom.dcmread(summary.images[0])
    lat, view = ds.ImageLaterality, ds.ViewPosition
    del ds.PatientOrientation
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare, enforce_file_format=True)
    seg_path = _seg_of(bare, tmp_path / "seg.dcm")
    assert_conformant(seg_path)
    expected = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}
    assert list(pydicom.dcmread(seg_path).PatientOrientation) == expected[(lat, view)]
