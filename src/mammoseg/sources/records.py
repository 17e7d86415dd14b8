"""One input image and how to make its mass mask: what every source yields.

A `Record` is small and picklable: it names files and describes the mask, and the mask
itself is only materialised by `Record.load_mask(height, width)` inside the worker that
prepares the image. Listing a dataset of thousands of mammograms therefore stays cheap
and `prepare` can hand records to worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mammoseg.dicom.bounded import DicomReadError, read_dicom
from mammoseg.dicom.checks import ReadLimits
from mammoseg.dicom.pixels import decode_pixels, read_dataset
from mammoseg.dicom.seg import read_seg_mask
from mammoseg.io import read_png


@dataclass(frozen=True)
class NoMask:
    """The image has no mass: an all-zero mask."""

    def load(self, height: int, width: int) -> np.ndarray:
        return np.zeros((height, width), dtype=bool)

    def files(self) -> tuple[Path, ...]:
        return ()


@dataclass(frozen=True)
class PngMask:
    """A mask image (PNG or anything OpenCV reads); every non-zero pixel is mass."""

    path: Path

    def files(self) -> tuple[Path, ...]:
        return (self.path,)

    def load(self, height: int, width: int) -> np.ndarray:
        mask = read_png(self.path)
        if mask.shape != (height, width):
            raise ValueError(
                f"{self.path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                f"{height}x{width}; a mask must have the image's size"
            )
        return mask != 0


@dataclass(frozen=True)
class PolygonMask:
    """Filled polygons in pixel coordinates, each a tuple of (x, y) = (column, row) points."""

    polygons: tuple[tuple[tuple[float, float], ...], ...]
    origin: Path | None = None  # the annotation file the polygons were read from

    def files(self) -> tuple[Path, ...]:
        return (self.origin,) if self.origin is not None else ()

    def load(self, height: int, width: int) -> np.ndarray:
        canvas = np.zeros((height, width), dtype=np.uint8)
        if self.polygons:
            # Vertices are rounded to the nearest pixel centre; fillPoly fills the
            # polygon including its boundary, as a contour drawn on pixels is meant.
            pts = [np.rint(np.asarray(p, dtype=np.float64)).astype(np.int32) for p in self.polygons]
            cv2.fillPoly(canvas, pts, 1)
        return canvas.astype(bool)


@dataclass(frozen=True)
class RoiDicomMask:
    """CBIS-DDSM style ROI mask DICOMs: among `candidates`, the files of the full image's size.

    The dataset's CSV sometimes swaps the ROI-mask and cropped-image paths, so the files
    are told apart by size (the mask has the full image's Rows x Columns; the crop is
    smaller). Each group of candidates is one abnormality; all of them are merged.
    """

    groups: tuple[tuple[Path, ...], ...]
    labels: tuple[str, ...] = ()  # the ROI folder per group, for error messages

    def files(self) -> tuple[Path, ...]:
        return tuple(path for group in self.groups for path in group)

    def load(self, height: int, width: int) -> np.ndarray:
        merged = np.zeros((height, width), dtype=bool)
        for index, candidates in enumerate(self.groups):
            label = self.labels[index] if index < len(self.labels) else f"abnormality {index + 1}"
            merged |= _load_roi_group(candidates, height, width, label)
        return merged


def _dicom_size(path: Path) -> tuple[int, int] | str:
    """Rows x Columns of a candidate ROI file, or why it cannot be read (a candidate that is not a
    DICOM of the image's size does not match)."""
    try:
        ds = read_dicom(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    except DicomReadError as exc:
        return str(exc)
    except (AttributeError, TypeError, ValueError):
        return f"{path}: no valid Rows/Columns"


def _read_roi_pixels(path: Path, height: int, width: int) -> np.ndarray:
    """The ROI mask DICOM's pixels that are not background, read and decoded within the default limits."""
    try:
        ds = read_dataset(path, ReadLimits())
        pixels = decode_pixels(ds, path)
    except DicomReadError as exc:
        raise ValueError(f"ROI mask {exc}") from None
    if pixels.shape != (height, width):
        raise ValueError(f"{path}: ROI mask decodes to {pixels.shape[0]}x{pixels.shape[1]}, "
                         f"not the image's {height}x{width}")
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # In MONOCHROME1 the largest value is black: background is the maximum.
        pixels = (2 ** int(getattr(ds, "BitsStored", 8)) - 1) - pixels.astype(np.int64)
    return pixels != 0


def _load_roi_group(candidates: tuple[Path, ...], height: int, width: int, label: str) -> np.ndarray:
    if not candidates:
        raise ValueError(f"{label}: no ROI DICOM files found")
    sizes = {path: _dicom_size(path) for path in candidates}
    matching = [path for path, size in sizes.items() if size == (height, width)]
    if not matching:
        found = ", ".join(
            f"{path.name} {s[0]}x{s[1]}" if isinstance(s, tuple) else f"{path.name} unreadable ({s})"
            for path, s in sizes.items()
        )
        raise ValueError(
            f"{label}: no ROI mask DICOM of the image's size {height}x{width} (found {found})"
        )
    # Normally exactly one file matches; duplicates of the same mask are merged harmlessly.
    merged = np.zeros((height, width), dtype=bool)
    for path in matching:
        merged |= _read_roi_pixels(path, height, width)
    return merged


@dataclass(frozen=True)
class SegMask:
    """Mass segments of DICOM SEG files that reference the image (as an archive stores annotations).

    `segs` holds (SEG file, numbers of its mass segments); the mask is their union on the
    image `sop_instance_uid`, read with highdicom from the frames that reference it.
    """

    sop_instance_uid: str
    segs: tuple[tuple[Path, tuple[int, ...]], ...]

    def files(self) -> tuple[Path, ...]:
        return tuple(path for path, _ in self.segs)

    def load(self, height: int, width: int) -> np.ndarray:
        merged = np.zeros((height, width), dtype=bool)
        for path, numbers in self.segs:
            merged |= read_seg_mask(path, self.sop_instance_uid, numbers, height, width)
        return merged


MaskSpec = NoMask | PngMask | PolygonMask | RoiDicomMask | SegMask


@dataclass(frozen=True)
class Record:
    """One mammogram to prepare.

    `image` is the file as found (DICOM or PNG); `split` is a preassigned `train`/`holdout`
    (CBIS-DDSM `--keep-official-split`) or empty; `problem` is a reason found while
    listing the dataset that makes the record unusable (prepare reports it in errors.csv).
    """

    id: str
    image: Path
    patient_id: str
    mask: MaskSpec = field(default_factory=NoMask)
    view: str = ""
    laterality: str = ""
    source: str = ""
    split: str = ""
    problem: str = ""

    def load_mask(self, height: int, width: int) -> np.ndarray:
        """The mass mask on the image's original grid, as a bool array of `height` x `width`."""
        return self.mask.load(height, width)

    def source_files(self) -> list[Path]:
        """Every file this image is made from: the image and its mask or annotation files."""
        return [self.image, *self.mask.files()]


def normalise_laterality(value: str) -> str:
    """`L`/`R` from the spellings sources use (L, LEFT, R, RIGHT); anything else is empty."""
    text = (value or "").strip().upper()
    if text in ("L", "LEFT"):
        return "L"
    if text in ("R", "RIGHT"):
        return "R"
    return ""


def normalise_view(value: str) -> str:
    """Upper-case view code; INbreast's `ML` is the mediolateral oblique view, `MLO`."""
    text = (value or "").strip().upper()
    return "MLO" if text == "ML" else text
