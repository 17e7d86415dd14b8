"""Mass measurements (`mammoseg.masses`) and their DICOM SR (`mammoseg.dicom.sr`), read back by highdicom.

The SR must say what the mask says: per connected component its area and max Feret diameter in mm
(or pixels without a spacing), an explicit "Mass: Absent" for an empty mask, references to the
SEG's segment and the source image, and pass dciodvfy.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mammoseg.masses import find_masses, max_feret

from dicom_factory import mg_dataset
from dicom_validator import assert_conformant

ROWS, COLS = 64, 48


def _mask() -> np.ndarray:
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[10:20, 5:9] = 255  # 10 x 4 = 40 px
    mask[30:33, 20:40] = 255  # 3 x 20 = 60 px: the largest, so Mass 1
    mask[50, 44] = 255  # one pixel
    return mask


def test_masses_areas_diameters_centroids_boxes_and_probability():
    prob = np.full((ROWS, COLS), 0.25, np.float32)
    prob[10:20, 5:9] = 0.75
    first, second, third = find_masses(_mask(), (0.1, 0.2), prob)
    assert (first.number, first.area_px, first.bbox, first.centroid) == (1, 60, (30, 20, 3, 20), (31.0, 29.5))
    assert first.max_diameter_px == pytest.approx(math.hypot(2, 19))
    assert first.max_diameter_mm == pytest.approx(math.hypot(2 * 0.1, 19 * 0.2))  # rows and columns scaled apart
    assert first.area_mm2 == pytest.approx(60 * 0.02)
    assert (second.area_px, second.bbox, second.mean_probability) == (40, (10, 5, 10, 4), 0.75)
    assert second.max_diameter_mm == pytest.approx(math.hypot(9 * 0.1, 3 * 0.2))
    assert (third.area_px, third.max_diameter_px, third.centroid) == (1, 0.0, (50.0, 44.0))
    assert find_masses(np.zeros((8, 8))) == []
    no_spacing = find_masses(_mask())[0]
    assert (no_spacing.area_mm2, no_spacing.max_diameter_mm, no_spacing.mean_probability) == (None, None, None)


def test_max_feret_and_bad_arguments():
    assert max_feret(np.array([[0, 0], [3, 4], [1, 1]])) == 5.0
    assert max_feret(np.array([[0, 0], [3, 4]]), (2.0, 0.5)) == pytest.approx(math.hypot(6, 2))
    with pytest.raises(ValueError, match="probability shape"):
        find_masses(_mask(), probability=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="spacing"):
        find_masses(_mask(), spacing=(0.0, 0.1))


def _source(**spacing) -> pydicom.Dataset:
    pixels = (np.arange(ROWS * COLS, dtype=np.uint16) % 4096).reshape(ROWS, COLS)
    return mg_dataset(pixels, bits_stored=12, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
                      PatientID="P7", ImageLaterality="L", ViewPosition="MLO", **spacing)


def _write(tmp_path, source, mask):
    from mammoseg.dicom.seg import SegIdentity, build_dicom_seg
    from mammoseg.dicom.sr import measurement_spacing, write_dicom_sr

    identity = SegIdentity("demo", "0123abcd", 0.5)
    seg = build_dicom_seg(mask > 0, source, identity=identity)
    masses = find_masses(mask, measurement_spacing(source).mm, np.full(mask.shape, 0.8, np.float32))
    return seg, masses, write_dicom_sr(masses, source, seg, tmp_path / "sr.dcm", identity=identity)


def _report(path):
    import highdicom as hd

    return hd.sr.MeasurementReport.from_sequence([hd.sr.srread(path)])


@pytest.mark.timeout(60)
def test_sr_round_trip_in_mm_with_references_and_the_detector_plane_note(tmp_path):
    pytest.importorskip("highdicom")
    from mammoseg.dicom.sr import NOTE_IMAGER, sr_identity

    source = _source(ImagerPixelSpacing=[0.1, 0.2])
    seg, masses, path = _write(tmp_path, source, _mask())
    assert_conformant(path)
    groups = _report(path).get_planar_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["Mass 1", "Mass 2", "Mass 3"]
    for group, mass in zip(groups, masses):
        (area,) = group.get_measurements(name=codes.SCT.Area)
        (diameter,) = group.get_measurements(name=codes.SCT.Diameter)
        assert (area.unit.value, diameter.unit.value) == ("mm2", "mm")
        assert area.value == pytest.approx(mass.area_mm2, rel=1e-9)
        assert diameter.value == pytest.approx(mass.max_diameter_mm, rel=1e-9)
        reference = group.referenced_segmentation_frame
        assert (reference.referenced_sop_instance_uid, reference.referenced_segment_numbers) == (seg.SOPInstanceUID, [1])
        assert reference.source_image_for_segmentation.referenced_sop_instance_uid == source.SOPInstanceUID
    assert [round(g.get_measurements(name=codes.SCT.Area)[0].value, 6) for g in groups] == [1.2, 0.8, 0.02]
    (image,) = _report(path).get_image_measurement_groups()
    ((name, value),) = [(q.name, q.value) for q in image.get_qualitative_evaluations()]
    assert (name.value, value.value) == ("4147007", "52101004")  # Mass: Present
    dataset = pydicom.dcmread(path)
    assert NOTE_IMAGER in _texts(dataset)
    assert sr_identity(dataset).run_id == "0123abcd"
    assert dataset.PatientID == "P7" and dataset.StudyInstanceUID == source.StudyInstanceUID


@pytest.mark.timeout(60)
def test_sr_of_an_empty_mask_says_no_mass_and_without_spacing_pixels(tmp_path):
    pytest.importorskip("highdicom")
    from mammoseg.dicom.sr import NOTE_NONE

    _, masses, path = _write(tmp_path, _source(), np.zeros((ROWS, COLS), np.uint8))
    assert masses == []
    assert_conformant(path)
    report = _report(path)
    assert report.get_planar_roi_measurement_groups() == []
    (image,) = report.get_image_measurement_groups()
    ((name, value),) = [(q.name, q.value) for q in image.get_qualitative_evaluations()]
    assert (name.value, value.value) == ("4147007", "272519000")  # Mass: Absent
    assert "No mass found." in _texts(pydicom.dcmread(path))
    _, _, path = _write(tmp_path, _source(), _mask())
    (first, *_) = _report(path).get_planar_roi_measurement_groups()
    (area,) = first.get_measurements(name=codes.SCT.Area)
    assert (area.value, area.unit.value) == (60.0, "{pixels}")
    assert NOTE_NONE in _texts(pydicom.dcmread(path))


def _texts(dataset) -> set[str]:
    out, stack = set(), list(dataset.get("ContentSequence") or [])
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "TEXT":
            out.add(str(item.TextValue))
        stack.extend(item.get("ContentSequence") or [])
    return out


@pytest.mark.timeout(120)
def test_predict_dicom_sr_writes_seg_and_sr_that_agree_with_the_mask(tmp_path):
    pytest.importorskip("highdicom")
    from mammoseg.cli import main
    from mammoseg.io import read_png

    from run_factory import write_random_run

    run = write_random_run(tmp_path / "run")
    src = tmp_path / "dicoms"
    src.mkdir()
    source = _source(PixelSpacing=[0.1, 0.1], ImagerPixelSpacing=[0.1, 0.1])
    source.save_as(src / "a.dcm", enforce_file_format=True)
    out = tmp_path / "pred"
    assert main(["predict", "--device", "cpu", "--no-progress", "--run", str(run), "--input", str(src),
                 "--out", str(out), "--dicom-sr", "--threshold", "0.45"]) == 0
    mask = read_png(out / "masks" / "a.png")
    seg = pydicom.dcmread(out / "seg" / "a.dcm")  # --dicom-sr writes the SEG it references
    assert_conformant(out / "sr" / "a.dcm")
    report = _report(out / "sr" / "a.dcm")
    expected = find_masses(mask, (0.1, 0.1))
    groups = report.get_planar_roi_measurement_groups()
    assert len(groups) == len(expected) > 0  # the random run finds something at 0.45 on this image
    for group, mass in zip(groups, expected):
        assert group.get_measurements(name=codes.SCT.Area)[0].value == pytest.approx(mass.area_mm2, rel=1e-9)
        assert group.referenced_segmentation_frame.referenced_sop_instance_uid == seg.SOPInstanceUID
    dataset = pydicom.dcmread(out / "sr" / "a.dcm")
    assert dataset.SeriesDescription == f"mammoseg {run.resolve().name} masses t=0.45"
