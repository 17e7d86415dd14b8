"""DICOM mammogram → windowed uint16 array + metadata (docs/method.md, preprocessing).

The paper standardises its inputs with the DICOM VOI LUT ("windowing"); this module
applies the same display pipeline every mammography workstation applies, so the network
sees what a radiologist sees:

1. **Modality LUT**: Rescale Slope/Intercept or the Modality LUT Sequence
   (pydicom's ``apply_modality_lut``).
2. **VOI**: the VOI LUT Sequence when present (pydicom's ``apply_voi``), else Window
   Center/Width with the declared VOI LUT Function — LINEAR (the default), LINEAR_EXACT
   or SIGMOID (pydicom's ``apply_windowing``). `window_index` picks one of several
   windows / LUTs (the first by default); asking for one the file does not have is an
   error.
3. **Output scale**: the VOI *output range* becomes 0…65535: for a window, window bottom
   → 0 and top → 65535 (SIGMOID: its asymptotes 0 and 1 → 0 and 65535); for a VOI LUT,
   0 … 2^n − 1 with n the LUT Descriptor's bits per entry (or the fewest bits that hold
   the LUT's largest entry, for LUTs whose entries exceed what they declare).
4. **Inversion** after the VOI, so dense tissue is always bright: the output is
   inverted (65535 − v) when Photometric Interpretation is MONOCHROME1 *or* Presentation
   LUT Shape is INVERSE. Both say the same thing (the mammography IOD requires INVERSE
   with MONOCHROME1), so the image is inverted once, never twice. MONOCHROME1 with
   IDENTITY is contradictory; the Photometric Interpretation, which describes the stored
   values, wins, and the image is inverted. A Presentation LUT Sequence is not applied.

**Files without any VOI** (INbreast is the known case) get a fallback window from the
breast region's own intensities: Otsu's threshold on the modality values splits breast
from background (breast = above the threshold for MONOCHROME2, below it for MONOCHROME1,
where the background is stored bright); the window runs linearly from the 0.1st to the
99.9th percentile of the breast pixels (nearest rank; tight enough to ignore markers and
clips, loose enough that dense masses are not clipped to white). Mammogram.window says which of
these happened.

**Images without information** are refused: when, after all of the above, fewer than
`MIN_INFORMATIVE_SHARE` (0.1%) of the pixels outside Pixel Padding differ from the most common
grey level (a window far outside the stored values, a VOI LUT of 0 bits, padding covering every
value), the message names the window and the stored values, so nobody trains on or predicts
a blank image.

The whole pipeline is evaluated once per distinct stored value and applied as a lookup
table (`mammoseg.dicom.levels`: indexed by the stored values themselves), which is exact
(every step is a function of the stored value) and keeps a full-field image's memory use to a
few copies of its uint16 pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut
from pydicom.pixels.processing import apply_voi, apply_windowing

from mammoseg.dicom.bounded import one_line
from mammoseg.dicom.checks import HeaderError, ReadLimits, check_header
from mammoseg.dicom.levels import stored_levels
from mammoseg.dicom.pixels import DicomReadError, decode_pixels, read_dataset
from mammoseg.geometry import chest_wall_side

#: Percentiles of the breast region's values that bound the fallback window.
FALLBACK_PERCENTILES = (0.1, 99.9)
#: An image is refused when fewer than this share of its (non-padding) pixels differ from its
#: most common grey level after windowing. A mammogram's breast covers tens of percent of the
#: image; this only catches windows, VOI LUTs or padding that leave (next to) nothing visible.
MIN_INFORMATIVE_SHARE = 1e-3

_OUT_MAX = 65535


@dataclass
class Mammogram:
    """A windowed mammogram and the metadata the later stages need.

    `pixels` is H×W uint16: 0 = window bottom, 65535 = window top, dense tissue bright.
    `laterality` is "L"/"R" ("" never happens in practice: it is derived from the image
    when the file has none; `laterality_source` says where it came from:
    "ImageLaterality", "Laterality" or "image").
    """

    pixels: np.ndarray
    path: Path
    patient_id: str
    laterality: str
    view: str
    pixel_spacing: tuple[float, float] | None
    sop_instance_uid: str
    presentation_intent: str
    window: str
    laterality_source: str = ""


def read_mammogram(path: str | os.PathLike, window_index: int = 0, limits: ReadLimits = ReadLimits()) -> Mammogram:
    """Read one 2-D greyscale mammogram DICOM and window it as docs/method.md says.

    Raises DicomReadError (message: "<path>: <reason>") for anything that is not a
    usable single-frame greyscale mammogram — checked from the header before any pixel is
    decoded (`mammoseg.dicom.checks`: kind, size `limits`, finite values) — including
    compressed pixel data whose decoder plugin is not installed (the message names the
    package to install).
    """
    path = Path(path)
    if isinstance(window_index, bool) or not isinstance(window_index, (int, np.integer)) or window_index < 0:
        raise DicomReadError(f"{path}: window_index must be an int >= 0, got {window_index!r}")
    ds = read_dataset(path, limits)
    try:
        return _mammogram(ds, path, int(window_index), limits)
    except (DicomReadError, MemoryError):
        raise
    except Exception as exc:  # an attribute pydicom cannot convert, wherever it is first read
        raise DicomReadError(f"{path}: malformed header ({type(exc).__name__}: {one_line(exc)})") from exc


def _mammogram(ds: Dataset, path: Path, window_index: int, limits: ReadLimits) -> Mammogram:
    """The checked, decoded and windowed image of `ds` with its metadata."""
    try:
        check_header(ds, limits)
    except HeaderError as exc:
        raise DicomReadError(f"{path}: {exc}") from None
    stored = decode_pixels(ds, path, limits)
    pixels, window = _window(stored, ds, path, window_index)
    laterality, laterality_source = _laterality(ds, pixels)
    return Mammogram(
        pixels=pixels,
        path=path,
        patient_id=_text(ds, "PatientID"),
        laterality=laterality,
        view=_view(ds),
        pixel_spacing=_pixel_spacing(ds),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        presentation_intent=_text(ds, "PresentationIntentType").upper(),
        window=window,
        laterality_source=laterality_source,
    )


# --------------------------------------------------------------------------- windowing


def _window(stored: np.ndarray, ds: Dataset, path: Path, index: int) -> tuple[np.ndarray, str]:
    """Windowed uint16 pixels and the kind of window used (see module docstring); refused when
    the result carries no information (`_check_information`)."""
    per_level = stored_levels(stored)
    levels = per_level.values
    padding = _padding(ds, levels, path)
    counts = per_level.counts()
    counts[padding] = 0  # padding is not breast: keep it out of the window's statistics
    if not counts.any():
        raise DicomReadError(f"{path}: every pixel is Pixel Padding Value ({_padding_text(ds)} covers the stored "
                             f"values {_range_text(levels)}); there is no image; check the pixel padding")
    try:
        modality = np.asarray(apply_modality_lut(levels, ds))
    except Exception as exc:
        raise DicomReadError(f"{path}: invalid modality LUT / rescale ({type(exc).__name__}: {exc})") from exc

    if _has_voi_lut_sequence(ds):
        scaled, kind = _apply_voi_lut_sequence(modality, ds, path, index), "voi_lut_sequence"
    elif ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        scaled, kind = _apply_window(modality, ds, path, index)
    else:
        scaled, kind = _fallback_window(modality.astype(np.float64), counts, _inverted(ds)), "fallback"

    scaled = np.clip(scaled, 0.0, 1.0)
    if _inverted(ds):
        scaled = 1.0 - scaled
    lut = np.rint(scaled * _OUT_MAX).astype(np.uint16)
    lut[padding] = 0  # padding is background (black), whatever the photometric interpretation
    _check_information(lut, counts, path, lambda: _window_text(ds, kind, index, levels, modality))
    return per_level.apply(lut), kind


def _check_information(lut: np.ndarray, counts: np.ndarray, path: Path, window_text: Callable[[], str]) -> None:
    """Refuse an image whose non-padding pixels (almost) all get one grey level from the window:
    a model would see a blank image and predict nothing, silently."""
    present = counts > 0
    outputs, inverse = np.unique(lut[present], return_inverse=True)
    per_output = np.bincount(inverse, weights=counts[present].astype(np.float64), minlength=outputs.size)
    total = float(per_output.sum())
    others = total - float(per_output.max())
    if others >= max(1.0, MIN_INFORMATIVE_SHARE * total):
        return
    grey = int(outputs[int(np.argmax(per_output))])
    how = "every pixel has" if others == 0 else f"all but {int(others)} of {int(total)} pixels have"
    raise DicomReadError(f"{path}: {how} the same grey level ({grey} of 65535) after windowing ({window_text()}); "
                         "check the window / VOI LUT / pixel padding")


def _range_text(values: np.ndarray) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return f"{lo:g}..{hi:g}"


def _padding_text(ds: Dataset) -> str:
    value, limit = ds.get("PixelPaddingValue"), ds.get("PixelPaddingRangeLimit")
    if limit in (None, ""):
        return f"Pixel Padding Value {value}"
    return f"Pixel Padding Value {value} to Range Limit {limit}"


def _window_text(ds: Dataset, kind: str, index: int, levels: np.ndarray, modality: np.ndarray) -> str:
    """Which window was applied to which values, for the no-information message."""
    values = f"stored values {_range_text(levels)}"
    if not np.array_equal(np.asarray(modality, dtype=np.float64), levels.astype(np.float64)):
        values += f", {_range_text(modality)} after the modality LUT"
    padding = f"; {_padding_text(ds)}" if ds.get("PixelPaddingValue") not in (None, "") else ""
    if kind == "voi_lut_sequence":
        return f"VOI LUT item {index}, LUT Descriptor {_shown(list(ds.VOILUTSequence[index].LUTDescriptor))}, " \
               f"vs {values}{padding}"
    if kind == "fallback":
        return f"no window in the file; the {values} give none{padding}"
    centers, widths = _values(ds, "WindowCenter"), _values(ds, "WindowWidth")
    return f"window C/W {centers[index]:g}/{widths[index]:g} vs {values}{padding}"


def _padding(ds: Dataset, levels: np.ndarray, path: Path) -> np.ndarray:
    """Which stored levels are padding: Pixel Padding Value, up to Pixel Padding Range Limit."""
    if ds.get("PixelPaddingValue") in (None, ""):
        return np.zeros(levels.shape, dtype=bool)
    try:
        value = int(ds.PixelPaddingValue)
        limit = int(ds.PixelPaddingRangeLimit) if ds.get("PixelPaddingRangeLimit") not in (None, "") else value
    except (TypeError, ValueError) as exc:
        raise DicomReadError(f"{path}: invalid Pixel Padding Value / Range Limit ({exc})") from None
    lo, hi = min(value, limit), max(value, limit)
    wide = levels.astype(np.int64)
    return (wide >= lo) & (wide <= hi)


def _inverted(ds: Dataset) -> bool:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def _has_voi_lut_sequence(ds: Dataset) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and all(item.get("LUTDescriptor") is not None and item.get("LUTData") is not None for item in seq)


def _apply_voi_lut_sequence(modality: np.ndarray, ds: Dataset, path: Path, index: int) -> np.ndarray:
    """VOI LUT item `index` applied to the modality values, scaled to [0, 1]."""
    seq = ds.VOILUTSequence
    if index >= len(seq):
        raise DicomReadError(f"{path}: window_index {index} asked, but the VOI LUT Sequence has {len(seq)} item(s)")
    entries, first, bits = _lut_descriptor(seq[index], path, index)
    # LUT inputs are integers; rescaled values are rounded, and values past either end of
    # the LUT take its first / last entry (clipping here also keeps pydicom's uint16
    # index arithmetic in range).
    values = np.clip(np.rint(modality).astype(np.int64), first, first + entries - 1)
    try:
        out = np.asarray(apply_voi(values, _voi_proxy(ds, index), index=0), dtype=np.float64)
    except Exception as exc:
        raise DicomReadError(f"{path}: invalid VOI LUT Sequence item {index} ({type(exc).__name__}: {exc})") from exc
    largest = int(np.max(np.asarray(out))) if out.size else 0
    if largest > 2**bits - 1:  # entries wider than declared: use the bits they need
        bits = largest.bit_length()
    # 0 bits with every entry 0: all outputs are 0 (refused later as an image without information).
    return out / float(max(2**bits - 1, 1))


def _lut_descriptor(item: Dataset, path: Path, index: int) -> tuple[int, int, int]:
    """(entries, first input value, bits per entry) of a VOI LUT item, checked: one line naming the
    attribute for a descriptor that is not three integers (entries 0 means 65536, PS3.3 C.11.2.1.1)."""
    value = item.get("LUTDescriptor")
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = [int(v) for v in items]
    except (TypeError, ValueError):
        numbers = []
    where = f"{path}: VOI LUT Sequence item {index}: LUT Descriptor {_shown(items)}"
    if len(numbers) != 3:
        raise DicomReadError(f"{where} is not 3 integers (number of entries, first input value, bits per entry)")
    entries, first, bits = numbers
    if not 0 <= entries <= 0xFFFF or not 0 <= bits <= 16:
        raise DicomReadError(f"{where}: {entries} entries of {bits} bits; at most 65535 entries (0 meaning "
                             "65536) of at most 16 bits are possible")
    return entries or 2**16, first, bits


def _shown(items: list[Any]) -> str:
    return "\\".join(str(v) for v in items)[:80]


def _voi_proxy(ds: Dataset, index: int) -> Dataset:
    """A dataset holding only VOI LUT item `index`, for pydicom's `apply_voi`.

    pydicom 3.0 indexes an 8-bit LUT with uint8 indices, so entries past 255 wrap
    around; declaring the same entries as 16-bit (values unchanged; the output scale uses
    the real bits) avoids that.
    """
    item = ds.VOILUTSequence[index]
    descriptor = item["LUTDescriptor"]
    lut = Dataset()
    lut.add_new(descriptor.tag, descriptor.VR, [int(descriptor.value[0]), int(descriptor.value[1]), 16])
    lut.add(item["LUTData"])
    proxy = Dataset()
    if hasattr(ds, "file_meta"):
        proxy.file_meta = ds.file_meta  # LUT Data in OW: byte order from the transfer syntax
    proxy.set_original_encoding(*ds.original_encoding)
    proxy.VOILUTSequence = [lut]
    return proxy


def _values(ds: Dataset, keyword: str) -> list[float]:
    value = ds[keyword].value
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    return [float(v) for v in items]


def _apply_window(modality: np.ndarray, ds: Dataset, path: Path, index: int) -> tuple[np.ndarray, str]:
    """Window Center/Width number `index` with the declared VOI LUT Function, scaled to [0, 1]."""
    try:
        centers, widths = _values(ds, "WindowCenter"), _values(ds, "WindowWidth")
    except (TypeError, ValueError) as exc:
        raise DicomReadError(f"{path}: invalid Window Center/Width ({exc})") from exc
    count = min(len(centers), len(widths))
    if index >= count:
        raise DicomReadError(f"{path}: window_index {index} asked, but the file has {count} window(s)")
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    kinds = {"LINEAR": "window_linear", "LINEAR_EXACT": "window_linear_exact", "SIGMOID": "window_sigmoid"}
    if function not in kinds:
        raise DicomReadError(f"{path}: unsupported VOI LUT Function {function!r} (LINEAR, LINEAR_EXACT or SIGMOID)")
    # pydicom maps the window onto [y_min, y_max] taken from the dataset it is given; a
    # small dataset declaring unsigned 16-bit values makes that range exactly 0…65535.
    # FD elements avoid DS string-length rules for centres/widths with many decimals.
    spec = Dataset()
    spec.PhotometricInterpretation = "MONOCHROME2"
    spec.BitsStored = 16
    spec.PixelRepresentation = 0
    spec.add_new(0x00281050, "FD", centers[index])
    spec.add_new(0x00281051, "FD", widths[index])
    spec.VOILUTFunction = function
    try:
        out = apply_windowing(modality.astype(np.float64), spec)
    except ValueError as exc:
        raise DicomReadError(f"{path}: invalid window {index} ({exc})") from exc
    return np.asarray(out, dtype=np.float64) / _OUT_MAX, kinds[function]


def _otsu_split(values: np.ndarray, weights: np.ndarray) -> int:
    """Index k maximising Otsu's between-class variance of values[:k+1] vs values[k+1:]
    (values sorted ascending, weights their pixel counts)."""
    w0 = np.cumsum(weights)[:-1]
    total = weights.sum()
    w1 = total - w0
    s0 = np.cumsum(weights * values)[:-1]
    s1 = (weights * values).sum() - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return int(np.argmax(between))


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Nearest-rank percentile `q` (0–100) of sorted `values` with pixel counts `weights`."""
    cum = np.cumsum(weights)
    rank = q / 100.0 * cum[-1]
    return float(values[min(int(np.searchsorted(cum, rank, side="left")), values.size - 1)])


def _fallback_window(modality: np.ndarray, counts: np.ndarray, inverted: bool) -> np.ndarray:
    """The no-VOI window (module docstring), as a function of each stored level, in [0, 1]."""
    present = counts > 0
    values, weights = modality[present], counts[present].astype(np.float64)
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    values, start = np.unique(values, return_index=True)  # merge levels with equal modality values
    weights = np.add.reduceat(weights, start)
    if values.size > 1:
        k = _otsu_split(values, weights)
        region = slice(0, k + 1) if inverted else slice(k + 1, None)
        values, weights = values[region], weights[region]
    lo = _weighted_percentile(values, weights, FALLBACK_PERCENTILES[0])
    hi = _weighted_percentile(values, weights, FALLBACK_PERCENTILES[1])
    if hi <= lo:
        return (modality > lo).astype(np.float64)
    return (modality - lo) / (hi - lo)


# --------------------------------------------------------------------------- metadata


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _laterality(ds: Dataset, pixels: np.ndarray) -> tuple[str, str]:
    """ImageLaterality, else Laterality, else the side the breast touches.

    A breast against the image's left edge is reported as "L", against the right edge as
    "R": the standard mammographic orientation (e.g. Patient Orientation A\\R for LCC,
    P\\L for RCC) puts the chest wall of a left breast at the left edge.
    """
    for keyword in ("ImageLaterality", "Laterality"):
        value = _text(ds, keyword).upper()
        if value in ("L", "R"):
            return value, keyword
    return ("L" if chest_wall_side(pixels) == "left" else "R"), "image"


_VIEW_MEANINGS = {
    "craniocaudal": "CC",
    "mediolateraloblique": "MLO",
    "mediolateral": "ML",
    "lateromedial": "LM",
    "lateromedialoblique": "LMO",
    "exaggeratedcraniocaudal": "XCC",
}


def _view(ds: Dataset) -> str:
    """ViewPosition, else the View Code Sequence's meaning mapped to the usual acronym."""
    view = _text(ds, "ViewPosition").upper()
    if view:
        return view
    seq = ds.get("ViewCodeSequence")
    if seq:
        meaning = "".join(ch for ch in str(seq[0].get("CodeMeaning", "")).lower() if ch.isalpha())
        return _VIEW_MEANINGS.get(meaning, "")
    return ""


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, else ImagerPixelSpacing, else None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value: Any = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0:
            return (row, col)
    return None
