"""DICOM SEG round trip: a mask written by mammoseg reads back identically, referencing its source."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

pytest.importorskip("highdicom")

from mammoseg.dicom_seg import build_dicom_seg, write_dicom_seg  # noqa: E402

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
