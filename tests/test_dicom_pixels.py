"""Pixel decoding (mammoseg.dicom.pixels): the read-into-a-buffer path gives pydicom's own array.

The reference is `pydicom.dcmread(path).pixel_array`. Files are larger than DEFER_BYTES so
the fast path is taken where it applies — checked, so these tests cannot pass by falling
back — and garbage in the unused high bits tests that pydicom's masking / sign extension
still happens.
"""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian, UID

from mammoseg.dicom.checks import ReadLimits
from mammoseg.dicom.pixels import DEFER_BYTES, DicomReadError, _native_pixels, decode_pixels, read_dataset

from dicom_factory import mg_dataset, save_dataset

SHAPE = (1023, 641)
SHAPE_8BIT = (1641, 1023)  # an odd byte count: a padding byte follows in the file


def dataset(kind: str):
    rng = np.random.default_rng(len(kind))
    if kind == "uint8":
        return mg_dataset(rng.integers(0, 256, SHAPE_8BIT, dtype=np.uint8))
    if kind == "uint16, 12 of 16 bits, garbage above":
        ds = mg_dataset(rng.integers(0, 4096, SHAPE, dtype=np.uint16), bits_stored=12)
        noisy = rng.integers(0, 65536, SHAPE, dtype=np.uint16)  # high 4 bits set at random
        ds.PixelData = noisy.tobytes()
        return ds
    if kind == "int16, 12 of 16 bits, garbage above":
        ds = mg_dataset(rng.integers(-2048, 2048, SHAPE).astype(np.int16), bits_stored=12)
        ds.PixelData = rng.integers(-32768, 32768, SHAPE).astype(np.int16).tobytes()
        return ds
    return mg_dataset(rng.integers(0, 65536, SHAPE, dtype=np.uint16), photometric="MONOCHROME1")


KINDS = ["uint8", "uint16, 12 of 16 bits, garbage above", "int16, 12 of 16 bits, garbage above", "uint16 MONOCHROME1"]


def decode(path: Path) -> tuple[np.ndarray, bool]:
    """(decoded array, whether the read-into-a-buffer path produced it)."""
    ds = read_dataset(path, ReadLimits())
    fast = _native_pixels(ds, path, UID(ds.file_meta.TransferSyntaxUID)) is not None
    return decode_pixels(ds, path), fast


def assert_as_pydicom(path: Path, fast_expected: bool) -> None:
    expected = pydicom.dcmread(path).pixel_array
    found, fast = decode(path)
    assert fast == fast_expected
    assert found.dtype == expected.dtype and found.shape == expected.shape
    assert np.array_equal(found, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_native_little_endian_files_read_into_a_buffer(tmp_path, kind):
    ds = dataset(kind)
    assert len(ds.PixelData) > DEFER_BYTES
    assert_as_pydicom(save_dataset(ds, tmp_path / "explicit.dcm"), fast_expected=True)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert_as_pydicom(save_dataset(ds, tmp_path / "implicit.dcm"), fast_expected=True)


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_syntaxes_decode_the_usual_way(tmp_path, syntax):
    ds = dataset("uint16, 12 of 16 bits, garbage above")
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "other.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian, implicit_vr=False)
    assert_as_pydicom(path, fast_expected=False)


def test_small_files_decode_the_usual_way(tmp_path):
    ds = mg_dataset(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    assert_as_pydicom(save_dataset(ds, tmp_path / "small.dcm"), fast_expected=False)


def test_truncated_large_file_is_refused(tmp_path):
    whole = save_dataset(dataset("uint16 MONOCHROME1"), tmp_path / "whole.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: len(whole) - 1000])
    ds = read_dataset(cut, ReadLimits())
    with pytest.raises(DicomReadError, match=r"cut\.dcm: could not decode the pixel data"):
        decode_pixels(ds, cut)
