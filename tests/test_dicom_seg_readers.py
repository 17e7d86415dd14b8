"""mammoseg's SEG opens in every reader: highdicom, pydicom and dcmtk, and passes dciodvfy.

highdicom's `segread` refuses a Pixel Measures Sequence without Slice Thickness, which highdicom
itself writes for a 2-D image with Pixel Spacing; `mammoseg.dicom.seg` records the slab (the
source's Slice Thickness, else a projection's Body Part Thickness) or leaves the spacing out.
Each case is read back by each reader, pixel for pixel.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

pytest.importorskip("highdicom")

from mammoseg.dicom.seg import slab_thickness, write_dicom_seg  # noqa: E402

from dicom_factory import mg_dataset  # noqa: E402
from dicom_validator import assert_conformant  # noqa: E402
from system_tools import require_tool  # noqa: E402

ROWS, COLS = 70, 45
#: Source headers and the Pixel Measures (spacing, thickness) the SEG must carry.
CASES = {
    "spacing and compressed thickness": ({"PixelSpacing": [0.07, 0.085], "BodyPartThickness": 48.5},
                                         ([0.07, 0.085], 48.5)),
    "spacing and slice thickness": ({"PixelSpacing": [0.1, 0.1], "SliceThickness": 1.0, "BodyPartThickness": 40},
                                    ([0.1, 0.1], 1.0)),
    "spacing only": ({"PixelSpacing": [0.07, 0.07]}, None),
    "imager spacing only": ({"ImagerPixelSpacing": [0.07, 0.07], "BodyPartThickness": 50}, None),
    "malformed thickness": ({"PixelSpacing": [0.07, 0.07], "BodyPartThickness": "-3"}, None),
}


def _mask() -> np.ndarray:
    mask = np.zeros((ROWS, COLS), bool)
    mask[10:31, 5:19] = True
    mask[50, 40] = True  # a lone pixel near a corner
    mask[69, 0] = True  # the last row's first pixel: bit packing across the frame's end
    return mask


@pytest.fixture(params=sorted(CASES), scope="module")
def written(request, tmp_path_factory):
    attributes, measures = CASES[request.param]
    pixels = (np.arange(ROWS * COLS, dtype=np.uint16) % 4096).reshape(ROWS, COLS)
    source = mg_dataset(pixels, bits_stored=12, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
                        PatientID="P001", ImageLaterality="R", ViewPosition="CC", **attributes)
    path = write_dicom_seg(_mask(), source, tmp_path_factory.mktemp("seg") / "seg.dcm")
    return source, path, measures


@pytest.mark.timeout(60)
def test_highdicom_segread_round_trip(written):
    import highdicom as hd

    source, path, _ = written
    seg = hd.seg.segread(path)
    assert seg.get_source_image_uids()[0][2] == source.SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
    assert pixels.shape == (1, ROWS, COLS, 1)
    np.testing.assert_array_equal(pixels[0, :, :, 0].astype(bool), _mask())


@pytest.mark.timeout(60)
def test_pydicom_round_trip_and_pixel_measures(written):
    source, path, measures = written
    seg = pydicom.dcmread(path)
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), _mask())
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == source.SOPInstanceUID
    shared = seg.SharedFunctionalGroupsSequence[0]
    if measures is None:
        assert "PixelMeasuresSequence" not in shared
    else:
        item = shared.PixelMeasuresSequence[0]
        assert [float(v) for v in item.PixelSpacing] == measures[0]
        assert float(item.SliceThickness) == measures[1]


@pytest.mark.timeout(60)
def test_dciodvfy_finds_no_error(written):
    assert_conformant(written[1])


@pytest.mark.timeout(60)
def test_dcmtk_parses_and_renders_the_seg(written, tmp_path):
    source, path, _ = written
    dcmdump = require_tool("dcmdump", "dcmtk")
    done = subprocess.run([dcmdump, "-q", "+P", "0062,0005", "+P", "0008,1155", "+P", "0062,0001", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert "[Mass]" in done.stdout and "[BINARY]" in done.stdout and f"[{source.SOPInstanceUID}]" in done.stdout
    # dcm2pnm renders a BINARY SEG's 1-bit frame: 0 black, 1 white.
    dcm2pnm = require_tool("dcm2pnm", "dcmtk")
    done = subprocess.run([dcm2pnm, "--write-raw-pnm", str(path), str(tmp_path / "seg.pgm")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(_read_pgm(tmp_path / "seg.pgm") > 0, _mask())


def _read_pgm(path) -> np.ndarray:
    """A binary (P5) 8-bit PGM as written by dcm2pnm."""
    data = path.read_bytes()
    magic, width, height, maxval, pixels = data.split(maxsplit=4)
    assert magic == b"P5" and int(maxval) <= 255
    return np.frombuffer(pixels, np.uint8, count=int(width) * int(height)).reshape(int(height), int(width))


def test_slab_thickness_rules():
    assert slab_thickness(pydicom.Dataset()) is None
    ds = pydicom.Dataset()
    ds.Modality, ds.BodyPartThickness = "MG", "52"
    assert slab_thickness(ds) == 52.0
    ds.SliceThickness = "0.5"
    assert slab_thickness(ds) == 0.5  # the source's own thickness first
    del ds.SliceThickness
    ds.Modality = "CT"  # not a projection: the body part is not the slab
    assert slab_thickness(ds) is None
    ds.Modality, ds.NumberOfFrames = "MG", 40  # tomosynthesis: a stack of slices, not one projection
    assert slab_thickness(ds) is None
