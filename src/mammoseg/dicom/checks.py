"""What a DICOM file must be before mammoseg decodes its pixels (README, "Your data is safe").

Checked from the header alone, so a hostile or broken file costs no memory:

- an image of a breast: Modality MG (or DX with Body Part Examined BREAST), stored with an
  image SOP class (mammography, digital X-ray, CR or secondary capture — CBIS-DDSM's scanned
  films are secondary captures);
- size: at most `max_pixels` pixels (default 60 Mpx: the largest mammography detectors are
  about 4096 × 5200 = 21 Mpx, scanned films ~ 40 Mpx) and an aspect ratio of at most
  `max_aspect` (default 5:1; mammograms are below 2:1). Padding a thin image to a square
  would otherwise cost memory quadratic in its long side (a 1 × 12000 image needs 288 MB);
- at most 16 bits stored (mammograms are 10–16 bit; wider integers would overflow the LUT);
- finite Rescale Slope/Intercept and Window Center/Width;
- a deflate-compressed file is inflated at most to what its limits allow (`max_bytes`), so a
  "zip bomb" is refused before pydicom inflates it whole (`mammoseg.dicom.bounded`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

#: Image storage SOP classes a mammogram comes in.
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image – For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image – For Processing",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image – For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image – For Processing",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image",
}
#: Header bytes allowed on top of the pixel data when inflating a deflated file.
HEADER_ALLOWANCE = 16 * 2**20


@dataclass(frozen=True)
class ReadLimits:
    """Caps checked before decoding: pixel count and aspect ratio."""

    max_pixels: int = 60_000_000
    max_aspect: float = 5.0

    @property
    def max_bytes(self) -> int:
        """The most bytes a file within the limits can inflate to (16-bit pixels plus a header)."""
        return 2 * self.max_pixels + HEADER_ALLOWANCE


class HeaderError(ValueError):
    """The header says the file cannot be used; the message is the reason (without the path)."""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip().upper()


def check_kind(ds: Dataset) -> None:
    """A 2-D X-ray image of a breast, by Modality and SOP class."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class not in IMAGE_SOP_CLASSES:
        name = UID(sop_class).name if sop_class else "missing"
        raise HeaderError(f"SOP Class UID {sop_class or '(none)'} ({name}) is not a 2-D X-ray image class; "
                          "mammography, digital X-ray, CR or secondary capture images are read")
    modality = _text(ds, "Modality")
    if modality == "MG" or (modality == "DX" and _text(ds, "BodyPartExamined") == "BREAST"):
        return
    raise HeaderError(f"Modality {modality or '(none)'}"
                      + (f" of {_text(ds, 'BodyPartExamined') or 'no body part'}" if modality == "DX" else "")
                      + ": not a mammogram (Modality MG, or DX with Body Part Examined BREAST, is expected)")


def check_structure(ds: Dataset) -> None:
    """Integer pixel data of one greyscale frame."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise HeaderError("floating-point pixel data is not supported (integer Pixel Data expected)")
        raise HeaderError("no pixel data (not an image object)")
    frames = ds.get("NumberOfFrames", 1)
    try:
        frames = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        raise HeaderError(f"invalid Number of Frames {frames!r}") from None
    if frames > 1:
        raise HeaderError(f"{frames} frames; a single-frame 2-D mammogram is expected (tomosynthesis is not supported)")
    samples = ds.get("SamplesPerPixel", 1)
    photometric = _text(ds, "PhotometricInterpretation")
    if samples not in (None, "", 1) or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise HeaderError(f"not a greyscale image (Samples per Pixel {samples}, Photometric Interpretation "
                          f"{photometric or 'missing'}); MONOCHROME1 or MONOCHROME2 is expected")


def check_size(ds: Dataset, limits: ReadLimits) -> None:
    """Rows × Columns within the pixel and aspect caps; at most 16 bits stored."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise HeaderError("no valid Rows/Columns in the header") from None
    if rows < 1 or cols < 1:
        raise HeaderError(f"Rows × Columns is {rows} × {cols}")
    if rows * cols > limits.max_pixels:
        raise HeaderError(f"Rows × Columns {rows} × {cols} = {rows * cols / 1e6:.1f} Mpx exceeds the "
                          f"{limits.max_pixels / 1e6:g} Mpx limit (raise it with --max-megapixels if this is a real mammogram)")
    aspect = max(rows, cols) / min(rows, cols)
    if aspect > limits.max_aspect:
        raise HeaderError(f"Rows × Columns {rows} × {cols} has aspect ratio {aspect:.1f}:1, beyond the "
                          f"{limits.max_aspect:g}:1 a mammogram can have")
    bits = ds.get("BitsStored")
    if bits is not None and int(bits) > 16:
        raise HeaderError(f"Bits Stored {int(bits)}: pixel values wider than 16 bits are not a mammogram's")


def _numbers(ds: Dataset, keyword: str) -> list[float]:
    value = ds[keyword].value
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    return [float(v) for v in items if v not in (None, "")]


def check_values(ds: Dataset) -> None:
    """Rescale and window numbers are finite (NaN would silently give an all-zero image)."""
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if ds.get(keyword) in (None, ""):
            continue
        try:
            values = _numbers(ds, keyword)
        except (TypeError, ValueError):
            raise HeaderError(f"{keyword} {ds[keyword].value!r} is not a number") from None
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise HeaderError(f"{keyword} is {bad[0]}; a finite number is required")
    if ds.get("RescaleSlope") not in (None, "") and _numbers(ds, "RescaleSlope") == [0.0]:
        raise HeaderError("RescaleSlope is 0: every pixel would have the same value")


def check_header(ds: Dataset, limits: ReadLimits) -> None:
    """Every header check above, in order (kind, structure, size, values)."""
    check_kind(ds)
    check_structure(ds)
    check_size(ds, limits)
    check_values(ds)
