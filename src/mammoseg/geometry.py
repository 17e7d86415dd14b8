"""Pad-to-square and resize (docs/method.md, preprocessing), and its inverse back onto the original grid.

The paper pads every mammogram to a square, keeping the aspect ratio, and resizes it to
512×512. The padding goes on the side away from the chest wall, so the breast stays
against its edge. A `PadResize` records what was done; it is stored in the manifest, and
`invert_mask` / `invert_probability` use it to put a prediction back on the original
pixel grid.

Conventions:

- The padded square has side ``N = max(height, width)``. Taller than wide: the columns
  are padded on the side opposite the chest wall. Wider than tall: rows are padded at
  the bottom. Padding is 0, the background of a windowed image.
- Resizing uses OpenCV's pixel-centre convention (half-pixel offsets), both ways, so the
  inverse lines up with the forward step at sub-pixel level.
- Images: area averaging (``INTER_AREA``), uint16 stays uint16.
- Masks: the fraction of each prepared pixel covered by the mask (area averaging), then
  "covered ≥ 0.5". Going back: bilinear resize of the 0/1 mask (or probabilities) to the
  padded square, threshold 0.5, crop. With this pair the boundary comes back in the
  middle of the band it was quantised to, so the error on an edge is at most half a
  prepared pixel (unbiased), and every prepared foreground pixel survives the inverse,
  however small (when the original is larger than the prepared size). A mask D prepared
  pixels across therefore comes back with IoU ≈ 1 − 1/D (about 0.95 at 20 px, 0.98 at
  50 px): a limit of storing a binary mask on the coarser grid, not of the inverse.
  Mapping a prepared-grid mask to the original grid and preparing it again gives back
  the same mask.

Breast-region crop (``standardise(..., crop=True)``, `find_breast_box`): before the padding,
the image may be cut to the box around the breast, so the model's pixels are breast rather
than background. The plan then records the pixels cut from each side (`crop_top` …
`crop_right`); the padding and resize apply to the cropped region, and the inverse puts the
prediction back into the crop box on the original grid, with 0 outside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np

from mammoseg.area_resize import resize_padded

ChestSide = Literal["left", "right"]

#: Fraction of the width, at each side, that `chest_wall_side` compares.
EDGE_FRACTION = 0.10


@dataclass(frozen=True)
class PadResize:
    """How one image was cropped, padded to a square and resized; enough to undo it exactly.

    Field names are the manifest.csv column names (`to_row` / `from_row`). `orig_height` and
    `orig_width` are the original image's size (the grid masks are mapped back to); `crop_*`
    the pixels cut from each side of it before padding (0: no crop, as every plan made before
    the crop existed); the padding applies to the cropped region.
    """

    orig_height: int
    orig_width: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    size: int
    crop_top: int = 0
    crop_bottom: int = 0
    crop_left: int = 0
    crop_right: int = 0

    def __post_init__(self) -> None:
        values = asdict(self)
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"PadResize.{name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"PadResize.{name} must be >= 0, got {value}")
        if self.orig_height < 1 or self.orig_width < 1 or self.size < 1:
            raise ValueError(f"PadResize needs positive sizes, got {values}")
        if self.cropped_height < 1 or self.cropped_width < 1:
            raise ValueError(f"PadResize crops the whole image away: {values}")
        if self.padded_height != self.padded_width:
            raise ValueError(
                f"PadResize does not pad to a square: {self.padded_height}×{self.padded_width} ({values})"
            )

    @property
    def cropped_height(self) -> int:
        """Rows of the region that is padded (the whole image when nothing is cropped)."""
        return self.orig_height - self.crop_top - self.crop_bottom

    @property
    def cropped_width(self) -> int:
        return self.orig_width - self.crop_left - self.crop_right

    @property
    def cropped(self) -> bool:
        """Whether any pixel of the original is cut away before padding."""
        return bool(self.crop_top or self.crop_bottom or self.crop_left or self.crop_right)

    @property
    def padded_height(self) -> int:
        return self.cropped_height + self.pad_top + self.pad_bottom

    @property
    def padded_width(self) -> int:
        return self.cropped_width + self.pad_left + self.pad_right

    @property
    def padded_size(self) -> int:
        """Side of the padded square, in original pixels."""
        return self.padded_height

    def to_row(self, with_crop: bool | None = None) -> dict[str, int]:
        """The manifest columns of this plan: `orig_height` … `size`, then `crop_top` … `crop_right`
        when `with_crop` (default: when the plan crops), so a folder prepared without the crop keeps
        the columns it always had."""
        row = {k: int(v) for k, v in asdict(self).items()}
        if not (self.cropped if with_crop is None else with_crop):
            for name in CROP_FIELDS:
                del row[name]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "PadResize":
        """Rebuild a plan from a manifest row (values may be strings, as read from CSV); a row
        without the crop columns (a folder prepared without the crop) is a plan without crop."""
        values: dict[str, int] = {}
        for name in cls.__dataclass_fields__:
            if name not in row and name in CROP_FIELDS:
                continue
            if name not in row:
                raise ValueError(f"manifest row has no {name!r} column (row id {row.get('id', '?')!r})")
            raw = row[name]
            try:
                number = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"manifest row {row.get('id', '?')!r}: {name}={raw!r} is not a number") from None
            if not number.is_integer():
                raise ValueError(f"manifest row {row.get('id', '?')!r}: {name}={raw!r} is not an integer")
            values[name] = int(number)
        return cls(**values)


#: The plan's fields that record the crop (and manifest.csv's columns for it); optional in a row.
CROP_FIELDS: tuple[str, ...] = ("crop_top", "crop_bottom", "crop_left", "crop_right")
#: The plan's fields every manifest row has (a folder prepared with or without the crop).
PLAN_FIELDS: tuple[str, ...] = ("orig_height", "orig_width", "pad_top", "pad_bottom", "pad_left", "pad_right", "size")


def chest_wall_side(image: np.ndarray) -> ChestSide:
    """The side ("left"/"right") the breast lies against: the brighter outer band.

    Compares the mean intensity of the outer 10 % of columns (at least one) at each
    side of a windowed image (dense tissue bright, background dark). Ties go to "left".
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"chest_wall_side needs a non-empty 2-D image, got shape {image.shape}")
    band = max(1, int(round(image.shape[1] * EDGE_FRACTION)))
    band = min(band, image.shape[1] // 2) or 1
    left = _mean(image[:, :band])
    right = _mean(image[:, -band:])
    return "right" if right > left else "left"


def _mean(band: np.ndarray) -> float:
    """The mean as ``band.mean(dtype=np.float64)`` gives it, bit for bit.

    For 8/16-bit integers OpenCV's sum is exact (integer accumulators; the total stays far
    below 2**53), as numpy's float64 sum of such values is, and one correctly rounded division
    follows in both, so the result is the same — about 10× faster on a full-field band.
    """
    if band.dtype in (np.uint8, np.uint16) and band.size:
        return cv2.sumElems(band)[0] / band.size
    return float(band.mean(dtype=np.float64))


def plan_pad_resize(height: int, width: int, chest_side: str, size: int = 512) -> PadResize:
    """Plan the padding to a square (away from the chest wall) and the resize to `size`."""
    if chest_side not in ("left", "right"):
        raise ValueError(f"chest_side must be 'left' or 'right', got {chest_side!r}")
    height, width, size = int(height), int(width), int(size)
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"plan_pad_resize needs positive sizes, got {height}×{width} → {size}")
    pad_top = pad_bottom = pad_left = pad_right = 0
    if height > width:
        if chest_side == "left":
            pad_right = height - width
        else:
            pad_left = height - width
    elif width > height:
        pad_bottom = width - height
    return PadResize(height, width, pad_top, pad_bottom, pad_left, pad_right, size)


def _check_shape(array: np.ndarray, shape: tuple[int, int], what: str) -> None:
    if array.ndim != 2 or array.shape != shape:
        raise ValueError(f"{what}: expected a 2-D array of shape {shape}, got {array.shape}")


def _resize(array: np.ndarray, side: int, interpolation: int) -> np.ndarray:
    if array.shape == (side, side):
        return array.copy()
    return cv2.resize(array, (side, side), interpolation=interpolation)


def apply_to_image(image: np.ndarray, plan: PadResize) -> np.ndarray:
    """Crop, pad and resize an image with area averaging: uint16 → uint16, anything else → float32.

    Computed as OpenCV's INTER_AREA resize of the padded square, without building the whole
    square where that is exact (`mammoseg.area_resize`).
    """
    image = np.asarray(image)
    _check_shape(image, (plan.orig_height, plan.orig_width), "apply_to_image")
    image = _crop(image, plan)
    if image.dtype != np.uint16:
        image = image.astype(np.float32)
    return resize_padded(image, plan.pad_top, plan.pad_left, plan.padded_size, plan.size)


def _crop(array: np.ndarray, plan: PadResize) -> np.ndarray:
    """The region of an original-grid array that the plan pads (a view; the array itself without crop)."""
    if not plan.cropped:
        return array
    return array[plan.crop_top : plan.orig_height - plan.crop_bottom, plan.crop_left : plan.orig_width - plan.crop_right]


def apply_to_mask(mask: np.ndarray, plan: PadResize) -> np.ndarray:
    """Crop, pad and resize a mask (non-zero = mass) → uint8 0/255: a prepared pixel is set
    when at least half of its area is covered.

    Only the mask's bounding box is resized (the rest of the square is zeros, and stays
    zeros); an image without a mass costs one scan for non-zero pixels.
    """
    mask = np.asarray(mask)
    _check_shape(mask, (plan.orig_height, plan.orig_width), "apply_to_mask")
    mask = _crop(mask, plan)  # a mass outside the crop box is not on the prepared grid
    box = _nonzero_box(mask)
    if box is None:
        return np.zeros((plan.size, plan.size), dtype=np.uint8)
    r0, r1, c0, c1 = box
    part = (mask[r0:r1, c0:c1] != 0).astype(np.float32)
    coverage = resize_padded(part, plan.pad_top + r0, plan.pad_left + c0, plan.padded_size, plan.size)
    # A tolerance for float rounding in the area sums: exactly half covered counts as set.
    return np.where(coverage >= 0.5 - 1e-6, 255, 0).astype(np.uint8)


def _nonzero_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1), end-exclusive, of the non-zero pixels of `mask`; None if none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[r0:r1].any(axis=0))
    return r0, r1, int(cols[0]), int(cols[-1]) + 1


class Standardised(NamedTuple):
    """A new image as the models see it: `image` (uint16 size×size), how it got there (`plan`)
    and the chest-wall side that decided the padding."""

    image: np.ndarray
    plan: PadResize
    chest_side: ChestSide


def standardise(pixels: np.ndarray, size: int, crop: bool = False) -> Standardised:
    """Windowed uint16 pixels → the prepared image: (with `crop`) the breast box, chest-wall
    side, pad to square, resize.

    The one definition used by `prepare` (for the prepared folder) and by `predict` (for a
    DICOM given directly), so both give the models bit-identical input. With `crop` the image
    is first cut to `find_breast_box`, and the chest side and padding are decided on that
    region; without it the result is what it was before the crop existed, bit for bit.
    """
    pixels = np.asarray(pixels)
    region, box = pixels, None
    if crop:
        box = find_breast_box(pixels)
        region = pixels[box.row0 : box.row1, box.col0 : box.col1]
    side = chest_wall_side(region)
    plan = plan_pad_resize(region.shape[0], region.shape[1], side, size=size)
    if box is not None:
        height, width = pixels.shape
        plan = replace(plan, orig_height=height, orig_width=width, crop_top=box.row0, crop_bottom=height - box.row1,
                       crop_left=box.col0, crop_right=width - box.col1)
    return Standardised(apply_to_image(pixels, plan), plan, side)


def invert_probability(prob: np.ndarray, plan: PadResize) -> np.ndarray:
    """Prepared-grid map (e.g. probabilities) → original grid, float32: bilinear resize to
    the padded square, then the padding is cut off; a cropped plan's region goes back into its
    crop box, with 0 outside it."""
    prob = np.asarray(prob)
    _check_shape(prob, (plan.size, plan.size), "invert_probability")
    # Enlarging (the usual case): bilinear. Shrinking (an original smaller than `size`):
    # area averaging, so no prepared pixel is skipped.
    interpolation = cv2.INTER_LINEAR if plan.padded_size >= plan.size else cv2.INTER_AREA
    square = _resize(prob.astype(np.float32, copy=False), plan.padded_size, interpolation)
    region = square[plan.pad_top : plan.pad_top + plan.cropped_height, plan.pad_left : plan.pad_left + plan.cropped_width]
    if not plan.cropped:
        return np.ascontiguousarray(region)
    full = np.zeros((plan.orig_height, plan.orig_width), dtype=np.float32)
    _crop(full, plan)[...] = region
    return full


def invert_mask(mask: np.ndarray, plan: PadResize) -> np.ndarray:
    """Prepared-grid mask (non-zero = mass) → original grid, uint8 0/255 (bilinear, ≥ 0.5)."""
    mask = np.asarray(mask)
    back = invert_probability((mask != 0).astype(np.float32), plan)
    return np.where(back >= 0.5, 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------- breast region

#: Long side (px) of the downsampled copy the breast is looked for on.
BREAST_SEARCH_SIDE = 256
#: Where between the background level (0) and Otsu's threshold (1) the breast begins.
BREAST_THRESHOLD_FRACTION = 0.25
#: Margin added around the breast's box on every side: this fraction of the image's longer side ...
BREAST_MARGIN_FRACTION = 0.02
#: ... and at least this many original pixels.
BREAST_MARGIN_MIN_PX = 4
#: Steps (3×3, on the downsampled copy) the opened breast grows back into the thresholded pixels.
BREAST_REGROW_STEPS = 4
#: An edge line at least this much foreground is part of a frame (a collimator border) ...
FRAME_LINE_FRACTION = 0.9
#: ... peeled off up to this fraction of the image's side from each edge.
FRAME_MAX_FRACTION = 0.08
#: A largest bright component smaller than this fraction of the image is no breast: no crop.
BREAST_MIN_FRACTION = 0.005


class BreastBox(NamedTuple):
    """Rows `row0:row1` and columns `col0:col1` (end-exclusive) of an image that hold the breast."""

    row0: int
    row1: int
    col0: int
    col1: int


def find_breast_box(image: np.ndarray) -> BreastBox:
    """The box around the breast of a windowed mammogram (dense tissue bright), with a margin.

    Why: on a screening mammogram the breast covers a small part of the padded square; cropping
    to it gives the model more breast pixels. How, on a copy shrunk by a whole factor (area
    averaging) to at most `BREAST_SEARCH_SIDE` px:

    1. threshold `BREAST_THRESHOLD_FRACTION` (a quarter) of the way from the background level
       to Otsu's threshold over all pixels (the background: the median of the pixels below
       Otsu's threshold), so the thin, darker tissue at the skin line counts as breast;
    2. an opening with a 3×3 ellipse cuts thin bridges (burned-in text, lines) to the breast
       (the breast's own thin tips are grown back afterwards, `BREAST_REGROW_STEPS`);
    3. a frame (collimator border) is peeled off each edge: the outermost lines that are at
       least `FRAME_LINE_FRACTION` foreground, up to `FRAME_MAX_FRACTION` of the side;
    4. the largest connected component (8-connected) is the breast — film labels and markers
       are smaller. Where it touches a peeled band it lay against that edge (a frame along the
       chest wall, or the breast itself filling the lines), and the box goes on to the edge.

    The box is mapped back to full resolution and grown by
    `BREAST_MARGIN_FRACTION` of the longer side (at least `BREAST_MARGIN_MIN_PX`), clipped to
    the image. A uniform or blank image, or one whose largest component is under
    `BREAST_MIN_FRACTION` of it, gives the whole image (no crop).
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"find_breast_box needs a non-empty 2-D image, got shape {image.shape}")
    height, width = image.shape
    whole = BreastBox(0, height, 0, width)
    # Shrink by a whole factor (OpenCV's fast k×k averaging); the < k last rows and columns are
    # left out of the search and counted back in when the box reaches them.
    factor = max(1, -(-max(height, width) // BREAST_SEARCH_SIDE))
    small_h, small_w = max(1, height // factor), max(1, width // factor)
    small = image.astype(np.float32) if image.dtype != np.uint16 else image
    if factor > 1:
        small = cv2.resize(small[: small_h * factor, : small_w * factor], (small_w, small_h),
                           interpolation=cv2.INTER_AREA)
    low, high = float(small.min()), float(small.max())
    if not high > low:
        return whole
    grey = np.round((small.astype(np.float32) - low) * np.float32(255.0 / (high - low))).astype(np.uint8)
    otsu, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    below = grey[grey <= otsu]
    background = float(np.median(below)) if below.size else 0.0
    foreground = (grey > background + BREAST_THRESHOLD_FRACTION * (otsu - background)).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    opened = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernel)
    top, bottom, left, right = _peel_frame(opened)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count < 2:
        return whole
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < BREAST_MIN_FRACTION * small_h * small_w:
        return whole
    # The opening also trims the breast's thin tips: grow the component back into the thresholded
    # pixels a few steps (not far enough to follow a bridge to a label across the image).
    _clear_edges(foreground, (top, bottom, left, right))
    breast = (labels == largest).astype(np.uint8)
    for _ in range(BREAST_REGROW_STEPS):
        breast = cv2.dilate(breast, kernel) & foreground
    ys, xs = np.nonzero(breast)
    y, h, x, w = int(ys.min()), int(ys.max()) + 1 - int(ys.min()), int(xs.min()), int(xs.max()) + 1 - int(xs.min())
    r0 = 0 if y <= top else y
    r1 = small_h if y + h >= small_h - bottom else y + h
    c0 = 0 if x <= left else x
    c1 = small_w if x + w >= small_w - right else x + w
    margin = max(BREAST_MARGIN_MIN_PX, round(BREAST_MARGIN_FRACTION * max(height, width)))
    r1 = height if r1 == small_h else r1 * factor
    c1 = width if c1 == small_w else c1 * factor
    return BreastBox(max(0, r0 * factor - margin), min(height, r1 + margin),
                     max(0, c0 * factor - margin), min(width, c1 + margin))


def _peel_frame(foreground: np.ndarray) -> tuple[int, int, int, int]:
    """Clear (in place) the frame-like lines at each edge of a 0/1 map; how many lines were
    cleared at the top, bottom, left and right."""
    height, width = foreground.shape
    depths = []
    for lines, limit in ((foreground, height), (foreground[::-1], height), (foreground.T, width),
                         (foreground.T[::-1], width)):
        most = int(FRAME_MAX_FRACTION * limit)
        depth = 0
        while depth < most and lines[depth].mean() >= FRAME_LINE_FRACTION:
            depth += 1
        depths.append(depth)
    _clear_edges(foreground, (depths[0], depths[1], depths[2], depths[3]))
    return depths[0], depths[1], depths[2], depths[3]


def _clear_edges(foreground: np.ndarray, depths: tuple[int, int, int, int]) -> None:
    """Zero (in place) `depths` = (top, bottom, left, right) lines at the edges of a map."""
    height, width = foreground.shape
    top, bottom, left, right = depths
    foreground[:top] = 0
    foreground[height - bottom :] = 0
    foreground[:, :left] = 0
    foreground[:, width - right :] = 0
