"""DICOM SEG round trip: a mask written by mammoseg reads back identically, referencing its source."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

pytest.importorskip("highdicom")

from mammoseg.dicom.seg import build_dicom_seg, write_dicom_seg  # noqa: E402

from dicom_factory import mg_dataset  # noqa: E402


def make_mg(rows: int = 70, cols: int = 45, anonymised: bool = True) -> Dataset:
    """A small MG image header + pixels; `anonymised` drops the Type 2 patient/study attributes."""
    pixels = (np.arange(rows * cols, dtype=np.uint16) % 4096).reshape(rows, cols)
    extra = {} if anonymised else {"PatientName": "Doe^Jane", "StudyDate": "20200101"}
    return mg_dataset(
        pixels, bits_stored=12, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
        PatientID="P001", ImageLaterality="R", **extra,
    )


def test_round_trip_mask_label_algorithm_and_reference(tmp_path):
    source = make_mg()
    path = tmp_path / "src.dcm"
    source.save_as(path, enforce_file_format=True)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    mask = np.zeros((70, 45), dtype=bool)
    mask[10:31, 5:19] = True
    mask[50, 40] = True  # a lone pixel near a corner: exact placement, not just a blob
    out = write_dicom_seg(mask, header, tmp_path / "seg" / "x.dcm")

    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY"
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask)
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Mass"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "mammoseg"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Mass"
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == "P001"

    import highdicom as hd

    hseg = hd.seg.segread(out)
    assert hseg.get_segment_description(1).segment_label == "Mass"


def test_empty_mask_still_written_and_source_untouched(tmp_path):
    source = make_mg(anonymised=False)
    before = set(source.dir())
    seg = build_dicom_seg(np.zeros((70, 45), np.uint8), source)
    assert seg.pixel_array.shape == (70, 45)
    assert not seg.pixel_array.any()
    assert seg.PatientName == "Doe^Jane"
    assert set(source.dir()) == before  # missing attributes filled on a copy only


def test_wrong_shape_and_missing_uid_are_clear_errors():
    source = make_mg()
    with pytest.raises(ValueError, match="does not match the image"):
        build_dicom_seg(np.zeros((45, 70), bool), source)
    del source.StudyInstanceUID
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        build_dicom_seg(np.zeros((70, 45), bool), source)


def test_identity_recorded_and_read_back(tmp_path):
    from mammoseg.dicom.seg import SegIdentity, referenced_instances, seg_identity

    source = make_mg()
    identity = SegIdentity("paper run", "r-1a2b", 0.35)
    out = write_dicom_seg(np.zeros((70, 45), bool), source, tmp_path / "s.dcm", identity=identity)
    seg = pydicom.dcmread(out)
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmParameters == "run_id=r-1a2b,threshold=0.35"
    assert algorithm.AlgorithmName == seg.SegmentSequence[0].SegmentAlgorithmName == "mammoseg paper run"
    assert algorithm.AlgorithmSource == "mammoseg"
    assert seg.SeriesDescription == "mammoseg paper run mass t=0.35"
    found = seg_identity(seg)
    assert found == identity and identity.matches(found)
    assert not SegIdentity("paper run", "r-1a2b", 0.5).matches(found)
    assert not SegIdentity("paper run", "r-other", 0.35).matches(found)
    assert SegIdentity("renamed", "r-1a2b", 0.35).matches(found)  # the name is only a label
    assert referenced_instances(seg) == {source.SOPInstanceUID}
    assert seg_identity(build_dicom_seg(np.zeros((70, 45), bool), source)) is None  # no run: no identity


@pytest.mark.parametrize(("run_id", "threshold"), [("a,b", 0.5), ("x=1", 0.5), ("", 0.5), ("ok", 1.0), ("ok", 0.0)])
def test_identity_rejects_what_cannot_be_written_back(run_id, threshold):
    from mammoseg.dicom.seg import SegIdentity

    with pytest.raises(ValueError):
        SegIdentity("run", run_id, threshold)


def test_mass_segments_of_an_annotation_seg_are_read_per_image(tmp_path):
    from dicom_factory import annotation_seg
    from mammoseg.dicom.seg import mass_segment_numbers, read_seg_mask

    source = make_mg()
    source.PixelSpacing = [0.07, 0.07]  # highdicom then writes Pixel Measures it cannot read back itself
    mass = np.zeros((70, 45), bool)
    mass[5:20, 3:9] = True
    mass[60, 44] = True
    calcification = np.zeros((70, 45), bool)
    calcification[40:44, 30:34] = True
    path = tmp_path / "a.dcm"
    annotation_seg(source, {"Calc": calcification, "Mass": mass}).save_as(path, enforce_file_format=True)
    seg = pydicom.dcmread(path)
    assert mass_segment_numbers(seg) == (2,)
    np.testing.assert_array_equal(read_seg_mask(path, source.SOPInstanceUID, (2,), 70, 45), mass)
    np.testing.assert_array_equal(read_seg_mask(path, source.SOPInstanceUID, (1, 2), 70, 45), mass | calcification)
    with pytest.raises(ValueError, match="SEG frames are 70x45 but image"):
        read_seg_mask(path, source.SOPInstanceUID, (2,), 71, 45)
    with pytest.raises(ValueError, match="the SEG does not reference image 1.2.3"):
        read_seg_mask(path, "1.2.3", (2,), 70, 45)


def test_predictions_are_not_reference_masks(tmp_path):
    from mammoseg.dicom.seg import mass_segment_numbers, read_seg_mask

    source = make_mg()
    source.PixelSpacing = [0.07, 0.07]
    mask = np.zeros((70, 45), bool)
    mask[33:50, 0:45] = True
    path = write_dicom_seg(mask, source, tmp_path / "p.dcm")
    seg = pydicom.dcmread(path)
    assert mass_segment_numbers(seg) == ()  # AUTOMATIC: mammoseg's own output
    assert mass_segment_numbers(seg, algorithm_types=("AUTOMATIC",)) == (1,)
    np.testing.assert_array_equal(read_seg_mask(path, source.SOPInstanceUID, (1,), 70, 45), mask)
