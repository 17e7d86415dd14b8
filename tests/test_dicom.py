"""DICOM ingestion (mammoseg.dicom.reader): windowing with known answers, metadata, refusals.

Expected values are computed here with plain numpy from the DICOM formulas (PS3.3
C.11.2.1.2 / C.11.2.1.3), not by calling pydicom.
"""

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, RLELossless

from mammoseg.dicom import DicomReadError, Mammogram
from mammoseg.dicom import read_mammogram as read_with_limits
from mammoseg.dicom.checks import ReadLimits

from dicom_factory import mg_dataset, save_dataset

MAX = 65535


def read_mammogram(path, window_index=0):
    """The reader without the aspect cap: these tests window thin ramps (every level once per row)."""
    return read_with_limits(path, window_index, limits=ReadLimits(max_aspect=float("inf")))


def make_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **attrs) -> Dataset:
    """A minimal MG image: 16 bits allocated, `bits` stored, explicit VR little endian."""
    return mg_dataset(pixels, photometric, bits_stored=bits, **{"PatientID": "P001", **attrs})


def save(ds: Dataset, tmp_path: Path, name: str = "img.dcm") -> Path:
    return save_dataset(ds, tmp_path / name)


def ramp(rows: int = 4, lo: int = 0, hi: int = 4095) -> np.ndarray:
    """Every value lo..hi once per row (so all window regions are exercised)."""
    return np.tile(np.arange(lo, hi + 1, dtype=np.int64), (rows, 1))


def to_u16(v: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(v, 0, 1) * MAX).astype(np.uint16)


def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), on the output range [0, 1]."""
    x = x.astype(np.float64)
    return np.where(
        x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5)
    )


def assert_close_u16(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.uint16
    assert actual.shape == expected.shape
    # ±1 only for values that land on a .5 rounding boundary through float order.
    assert np.abs(actual.astype(np.int64) - expected.astype(np.int64)).max() <= 1


# ----------------------------------------------------------------------------- windows


def test_linear_window_known_values(tmp_path):
    x = ramp()
    ds = make_dataset(x, WindowCenter=2048, WindowWidth=1001)
    m = read_mammogram(save(ds, tmp_path))
    assert m.window == "window_linear"
    assert_close_u16(m.pixels, to_u16(linear(x, 2048, 1001)))
    # Hand-checked points: c − 0.5 − (w−1)/2 = 1547.5, c − 0.5 + (w−1)/2 = 2547.5.
    row = m.pixels[0]
    assert row[1547] == 0 and row[1548] == round((1548 - 2047.5) / 1000 * MAX + MAX / 2)
    assert row[2547] == round((2547 - 2047.5) / 1000 * MAX + MAX / 2) and row[2548] == MAX
    assert row[2047] == round(MAX * 0.4995)


def test_linear_exact_window(tmp_path):
    x = ramp()
    ds = make_dataset(x, WindowCenter=1000.25, WindowWidth=600.5, VOILUTFunction="LINEAR_EXACT")
    m = read_mammogram(save(ds, tmp_path))
    assert m.window == "window_linear_exact"
    expected = np.clip((x - 1000.25) / 600.5 + 0.5, 0, 1)  # PS3.3 C.11.2.1.3.2
    assert_close_u16(m.pixels, to_u16(expected))


def test_sigmoid_window(tmp_path):
    x = ramp()
    ds = make_dataset(x, WindowCenter=2500, WindowWidth=800, VOILUTFunction="SIGMOID")
    m = read_mammogram(save(ds, tmp_path))
    assert m.window == "window_sigmoid"
    expected = 1.0 / (1.0 + np.exp(-4.0 * (x - 2500) / 800))  # PS3.3 C.11.2.1.3.1
    assert_close_u16(m.pixels, to_u16(expected))
    assert m.pixels[0, 2500] == round(MAX / 2)


def test_rescale_slope_intercept_before_window(tmp_path):
    x = ramp(lo=0, hi=2047)
    ds = make_dataset(x, bits=11, RescaleSlope=2.5, RescaleIntercept=-1000, WindowCenter=1500, WindowWidth=2001)
    m = read_mammogram(save(ds, tmp_path))
    assert_close_u16(m.pixels, to_u16(linear(x * 2.5 - 1000, 1500, 2001)))


def test_signed_pixels_with_rescale(tmp_path):
    x = np.tile(np.arange(-2048, 2048, dtype=np.int64), (2, 1))
    ds = make_dataset(x, RescaleSlope=1, RescaleIntercept=100, WindowCenter=0, WindowWidth=3001)
    m = read_mammogram(save(ds, tmp_path))
    assert_close_u16(m.pixels, to_u16(linear(x + 100, 0, 3001)))


def test_several_windows_and_window_index(tmp_path):
    x = ramp()
    ds = make_dataset(x, WindowCenter=[1000, 3000], WindowWidth=[501, 801])
    path = save(ds, tmp_path)
    assert_close_u16(read_mammogram(path).pixels, to_u16(linear(x, 1000, 501)))
    assert_close_u16(read_mammogram(path, window_index=1).pixels, to_u16(linear(x, 3000, 801)))
    with pytest.raises(DicomReadError, match=r"window_index 2 .* 2 window"):
        read_mammogram(path, window_index=2)


def voi_lut_item(first: int, data: np.ndarray, bits: int, as_ow: bool = False) -> Dataset:
    """A VOI LUT item; LUT Data as a US value list or as OW bytes (both occur in files)."""
    item = Dataset()
    item.add_new(0x00283002, "SS" if first < 0 else "US", [len(data), first, bits])
    if as_ow:
        item.add_new(0x00283006, "OW", data.astype("<u2").tobytes())
    else:
        item.add_new(0x00283006, "US", [int(v) for v in data])
    return item


def test_voi_lut_sequence_is_preferred_and_scaled_to_its_bits(tmp_path):
    x = ramp()
    first = 1000
    curve = np.rint(4095 * np.sqrt(np.linspace(0, 1, 1024))).astype(np.int64)  # 12-bit output
    flat = np.rint(np.linspace(0, 255, 2048)).astype(np.int64)  # 8-bit output
    ds = make_dataset(x, WindowCenter=2048, WindowWidth=100)  # a window too: the LUT wins
    ds.VOILUTSequence = Sequence([voi_lut_item(first, curve, 12, as_ow=True), voi_lut_item(0, flat, 8)])
    path = save(ds, tmp_path)

    m = read_mammogram(path)
    assert m.window == "voi_lut_sequence"
    idx = np.clip(x, first, first + 1023) - first  # below the first entry → first; past the end → last
    assert_close_u16(m.pixels, to_u16(curve[idx] / 4095))

    m1 = read_mammogram(path, window_index=1)
    assert_close_u16(m1.pixels, to_u16(flat[np.clip(x, 0, 2047)] / 255))
    with pytest.raises(DicomReadError, match="VOI LUT Sequence has 2"):
        read_mammogram(path, window_index=2)


def test_voi_lut_applied_to_rescaled_values(tmp_path):
    x = ramp(lo=0, hi=1023, rows=2)
    lut = np.arange(4096, dtype=np.int64)[::-1].copy()  # decreasing 12-bit LUT starting at -2048
    ds = make_dataset(x, bits=10, RescaleSlope=2, RescaleIntercept=-1024)
    ds.VOILUTSequence = Sequence([voi_lut_item(-2048, lut, 12)])  # signed first value: SS
    m = read_mammogram(save(ds, tmp_path))
    assert_close_u16(m.pixels, to_u16(lut[(x * 2 - 1024) + 2048] / 4095))


# ----------------------------------------------------------------------------- inversion


def test_monochrome1_inverted_after_window(tmp_path):
    x = ramp()
    expected = MAX - to_u16(linear(x, 2048, 1001)).astype(np.int64)
    for name, extra in [("m1.dcm", {}), ("m1inv.dcm", {"PresentationLUTShape": "INVERSE"})]:
        ds = make_dataset(x, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=1001, **extra)
        assert_close_u16(read_mammogram(save(ds, tmp_path, name)).pixels, expected.astype(np.uint16))
    # MONOCHROME1 + IDENTITY: Photometric Interpretation wins, still inverted once.
    ds = make_dataset(x, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=1001, PresentationLUTShape="IDENTITY")
    assert_close_u16(read_mammogram(save(ds, tmp_path, "m1id.dcm")).pixels, expected.astype(np.uint16))
    # MONOCHROME2 + INVERSE: inverted.
    ds = make_dataset(x, WindowCenter=2048, WindowWidth=1001, PresentationLUTShape="INVERSE")
    assert_close_u16(read_mammogram(save(ds, tmp_path, "m2inv.dcm")).pixels, expected.astype(np.uint16))


# ----------------------------------------------------------------------------- no VOI


def breast_phantom(monochrome1: bool) -> tuple[np.ndarray, np.ndarray]:
    """Stored values and the breast region: tissue 1000..2999 against the left edge,
    background 0..40 on the right (MONOCHROME1: 4095 − those, background bright)."""
    rng = np.random.default_rng(3)
    h, w = 60, 100
    breast = np.zeros((h, w), bool)
    breast[:, :55] = True
    tissue = rng.permutation(np.resize(np.arange(1000, 3000), breast.sum()))
    x = rng.integers(0, 41, (h, w))
    x[breast] = tissue
    return (4095 - x if monochrome1 else x), breast


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_fallback_window_from_breast_percentiles(tmp_path, photometric):
    mono1 = photometric == "MONOCHROME1"
    x, breast = breast_phantom(mono1)
    m = read_mammogram(save(make_dataset(x, photometric=photometric), tmp_path))
    assert m.window == "fallback"
    lo = np.percentile(x[breast], 0.1, method="inverted_cdf")
    hi = np.percentile(x[breast], 99.9, method="inverted_cdf")
    expected = np.clip((x - lo) / (hi - lo), 0, 1)
    if mono1:
        expected = 1 - expected
    assert_close_u16(m.pixels, to_u16(expected))
    # Dense tissue bright, background black in both encodings.
    assert m.pixels[~breast].max() == 0
    assert m.pixels[breast].mean() > 20000


# ----------------------------------------------------------------------------- metadata


def test_metadata(tmp_path):
    x, _ = breast_phantom(False)
    ds = make_dataset(
        x,
        WindowCenter=2000,
        WindowWidth=2000,
        PatientID="  anon-17 ",
        ImageLaterality="R",
        Laterality="L",
        ViewPosition="MLO",
        PixelSpacing=[0.07, 0.065],
        ImagerPixelSpacing=[0.1, 0.1],
        PresentationIntentType="FOR PRESENTATION",
    )
    path = save(ds, tmp_path)
    m = read_mammogram(str(path))
    assert isinstance(m, Mammogram)
    assert m.path == path
    assert m.patient_id == "anon-17"
    assert (m.laterality, m.laterality_source) == ("R", "ImageLaterality")
    assert m.view == "MLO"
    assert m.pixel_spacing == (0.07, 0.065)
    assert m.sop_instance_uid == ds.SOPInstanceUID
    assert m.presentation_intent == "FOR PRESENTATION"


def test_metadata_fallbacks(tmp_path):
    x, _ = breast_phantom(False)  # breast against the left edge
    ds = make_dataset(x, Laterality="L", ImagerPixelSpacing=[0.1, 0.09])
    ds.ViewCodeSequence = Sequence([Dataset()])
    ds.ViewCodeSequence[0].CodeMeaning = "cranio-caudal"
    m = read_mammogram(save(ds, tmp_path, "a.dcm"))
    assert (m.laterality, m.laterality_source) == ("L", "Laterality")
    assert m.view == "CC"
    assert m.pixel_spacing == (0.1, 0.09)
    assert m.presentation_intent == ""

    # No laterality at all: from the image (breast against the left edge → "L").
    m = read_mammogram(save(make_dataset(x), tmp_path, "b.dcm"))
    assert (m.laterality, m.laterality_source) == ("L", "image")
    assert m.pixel_spacing is None and m.view == ""
    m = read_mammogram(save(make_dataset(x[:, ::-1].copy()), tmp_path, "c.dcm"))
    assert (m.laterality, m.laterality_source) == ("R", "image")


# ----------------------------------------------------------------------------- refusals


def test_refuses_missing_and_non_dicom_files(tmp_path):
    with pytest.raises(DicomReadError, match="no such file"):
        read_mammogram(tmp_path / "absent.dcm")
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 20)
    with pytest.raises(DicomReadError) as err:
        read_mammogram(text)
    assert str(err.value).startswith(f"{text}: not a DICOM file")
    assert isinstance(err.value, ValueError)


def test_refuses_dataset_without_pixel_data(tmp_path):
    ds = make_dataset(ramp(rows=2, hi=15))
    del ds.PixelData
    path = save(ds, tmp_path)
    with pytest.raises(DicomReadError, match=r"^.*img\.dcm: no pixel data"):
        read_mammogram(path)


def test_refuses_multi_frame(tmp_path):
    frames = np.zeros((3, 8, 8), np.uint16)
    ds = make_dataset(frames[0], NumberOfFrames=3)
    ds.PixelData = frames.tobytes()
    with pytest.raises(DicomReadError, match="3 frames"):
        read_mammogram(save(ds, tmp_path))


def test_refuses_colour(tmp_path):
    ds = make_dataset(np.zeros((8, 8), np.uint16))
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((8, 8, 3), np.uint8).tobytes()
    with pytest.raises(DicomReadError, match="not a greyscale image.*RGB"):
        read_mammogram(save(ds, tmp_path))


def test_refuses_truncated_file(tmp_path):
    whole = save(make_dataset(ramp(rows=8)), tmp_path).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DicomReadError, match=r"cut\.dcm: could not decode the pixel data"):
        read_mammogram(cut)


def test_refuses_unsupported_voi_function(tmp_path):
    ds = make_dataset(ramp(rows=2, hi=15), WindowCenter=8, WindowWidth=4, VOILUTFunction="LOG")
    with pytest.raises(DicomReadError, match="VOI LUT Function 'LOG'"):
        read_mammogram(save(ds, tmp_path))


# ----------------------------------------------------------------------------- compression


def compressed_copy(x: np.ndarray, tmp_path: Path, syntax, name: str, **kwargs) -> Path:
    ds = make_dataset(x, WindowCenter=2048, WindowWidth=4096)
    ds.compress(syntax, **kwargs)
    return save(ds, tmp_path, name)


def test_compressed_files_decode_to_the_same_pixels(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4096, (48, 40))
    plain = read_mammogram(save(make_dataset(x, WindowCenter=2048, WindowWidth=4096), tmp_path, "plain.dcm"))
    rle = read_mammogram(compressed_copy(x, tmp_path, RLELossless, "rle.dcm"))
    np.testing.assert_array_equal(rle.pixels, plain.pixels)
    j2k = read_mammogram(compressed_copy(x, tmp_path, JPEG2000Lossless, "j2k.dcm"))
    np.testing.assert_array_equal(j2k.pixels, plain.pixels)


def test_missing_jpeg2000_decoder_names_the_plugin(tmp_path, monkeypatch):
    from pydicom.pixels.decoders.base import get_decoder

    path = compressed_copy(ramp(rows=48, lo=0, hi=63), tmp_path, JPEG2000Lossless, "j2k.dcm")
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})  # as if not installed
    with pytest.raises(DicomReadError) as err:
        read_mammogram(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert "JPEG 2000" in message and "pylibjpeg-openjpeg" in message
