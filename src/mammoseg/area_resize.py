"""OpenCV's area-averaging resize of a zero-padded square, without building the square.

`mammoseg.geometry` pads an image to an n×n square and shrinks it to size×size with
``cv2.INTER_AREA``. Building the square costs a copy of the image (and, for a mask, a float32
square of 64 MiB at 4084²), and much of it is padding or, for a mask, zeros.

OpenCV's area resize is local: output pixel (y, x) is a weighted sum of the input pixels
under its cell, summed in a fixed order, with weights that depend only on where the cell
falls on the input grid. OpenCV computes the cell positions as ``dx * scale`` in double
precision, with ``scale = 1 / (size / n)``. When that scale is exactly n/size (a binary
fraction that survives the double rounding: for size 512 the detector sizes 4084, 4096, 3328,
2560, 2294 and 3518 all do, 737 does not), the positions are exact and the cell pattern
repeats every ``n/g`` input and ``size/g`` output pixels (g = gcd(n, size)): the tables
OpenCV builds for a block of whole periods are the full square's, shifted. So the square can
be cut into such blocks and each resized on its own, with bit-identical results: blocks that
hold only zeros are zeros and are skipped, blocks inside the image are resized from views (no
copy), and only the blocks that straddle the image's edge are copied next to their padding.
When the cut is not exact (enlarging, a scale OpenCV cannot represent exactly, float pixels
at scale 2 — see `exact_block`) the whole square is built and resized, as before.
tests/test_area_resize.py checks the equality over many shapes, positions, types and scales.
"""

from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np

#: A block-aligned span of one axis of the square: (begin, end, whether it lies inside the part).
Span = tuple[int, int, bool]


def exact_block(n: int, size: int, dtype: np.dtype | type = np.uint16) -> int | None:
    """Input pixels per repeating block of OpenCV's n → size area resize of `dtype` pixels, or
    None when the square cannot be cut into blocks with bit-identical results (see module
    docstring)."""
    if n <= size:  # enlarging (or nothing to do): OpenCV interpolates; no block structure
        return None
    if np.dtype(dtype).kind == "f" and n == 2 * size:
        # OpenCV's 2×2 kernel adds floats in one order in its SIMD body and in another in its
        # scalar tail; a cut would move pixels from one to the other.
        return None
    scale = 1.0 / (size / n)  # what OpenCV computes, in IEEE double as Python does
    if Fraction(scale) != Fraction(n, size):
        return None
    return n // math.gcd(n, size)


def _segments(start: int, length: int, n: int, block: int) -> list[Span]:
    """Block-aligned spans (begin, end, inside) covering [start, start+length) on one axis;
    `inside` when the span lies wholly within it."""
    stop = start + length
    lo, hi = start // block * block, min(n, -(-stop // block) * block)
    inner_lo, inner_hi = -(-start // block) * block, stop // block * block
    if inner_lo >= inner_hi:
        return [(lo, hi, False)]
    spans = [(lo, inner_lo, False), (inner_lo, inner_hi, True), (inner_hi, hi, False)]
    return [(a, b, inside) for a, b, inside in spans if a < b]


def _tile(part: np.ndarray, top: int, left: int, rows: Span, cols: Span) -> np.ndarray:
    """The square's pixels rows × cols: a view of `part` when inside it, else a zero-padded copy."""
    (r0, r1, rows_inside), (c0, c1, cols_inside) = rows, cols
    if rows_inside and cols_inside:
        return part[r0 - top : r1 - top, c0 - left : c1 - left]
    tile = np.zeros((r1 - r0, c1 - c0), dtype=part.dtype)
    y0, y1 = max(r0, top), min(r1, top + part.shape[0])
    x0, x1 = max(c0, left), min(c1, left + part.shape[1])
    tile[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = part[y0 - top : y1 - top, x0 - left : x1 - left]
    return tile


def _whole_square(part: np.ndarray, top: int, left: int, n: int, size: int) -> np.ndarray:
    square = np.zeros((n, n), dtype=part.dtype)
    square[top : top + part.shape[0], left : left + part.shape[1]] = part
    if n == size:
        return square
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def resize_padded(part: np.ndarray, top: int, left: int, n: int, size: int) -> np.ndarray:
    """``cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)`` of the n×n square that
    is zero except for `part` at (`top`, `left`), bit for bit, mostly without building it.

    `part` is a 2-D array of a type OpenCV resizes (uint16 and float32 here); the result has
    its type.
    """
    if part.ndim != 2 or top < 0 or left < 0 or top + part.shape[0] > n or left + part.shape[1] > n:
        raise ValueError(f"resize_padded: a {part.shape} part at ({top}, {left}) does not fit a {n}×{n} square")
    if part.size == 0:
        return np.zeros((size, size), dtype=part.dtype)
    block = exact_block(n, size, part.dtype)
    if block is None:
        return _whole_square(part, top, left, n, size)
    out_block = block * size // n
    out = np.zeros((size, size), dtype=part.dtype)
    for rows in _segments(top, part.shape[0], n, block):
        for cols in _segments(left, part.shape[1], n, block):
            y, x = rows[0] // block * out_block, cols[0] // block * out_block
            h, w = (rows[1] - rows[0]) // block * out_block, (cols[1] - cols[0]) // block * out_block
            out[y : y + h, x : x + w] = cv2.resize(
                _tile(part, top, left, rows, cols), (w, h), interpolation=cv2.INTER_AREA
            )
    return out
