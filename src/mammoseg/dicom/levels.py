"""The stored levels of a DICOM image, and a per-level table applied to every pixel, exactly.

`mammoseg.dicom.reader` evaluates its whole display pipeline (modality LUT, VOI, scale, inversion)
once per stored level and applies the result as a lookup table. This module holds the two
whole-image passes that costs, kept fast because they run over every pixel of a
full-field mammogram (~14 Mpx):

- **applying the table**: for the 8- and 16-bit integers every mammogram is stored in, the
  table is laid out by the stored value's bit pattern (at most 65,536 entries), so the
  stored array itself indexes it: one gather, no offset array;
- **pixels per level** (for the fallback window): one histogram pass over that same bit
  pattern, counted exactly.

Which levels the table is evaluated on is part of the result (a VOI LUT's output scale
depends on the largest value over them): every integer from the image's minimum to its
maximum, or, for wider integers spanning 2**20 values or more, only the values present.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Level ranges narrower than this get one table entry per integer in the range.
DENSE_RANGE = 2**20
#: OpenCV counts a histogram in float32, exact up to 2**24: blocks of at most this many pixels.
_EXACT_COUNT = 2**24


@dataclass(frozen=True)
class StoredLevels:
    """The levels a per-level table is evaluated on (`values`, ascending, in the stored dtype)
    and how to apply that table to the image's pixels.

    `index` holds, per pixel, the position of its level in a table of `table_size` entries;
    `slots` holds, per level, its position in that table.
    """

    values: np.ndarray
    index: np.ndarray
    slots: np.ndarray | None  # None: level i sits at position i
    table_size: int

    def apply(self, table: np.ndarray) -> np.ndarray:
        """Per-pixel values from `table` (one entry per level, in the order of `values`)."""
        if self.slots is None:
            return table[self.index]
        full = np.zeros(self.table_size, dtype=table.dtype)
        full[self.slots] = table
        return full[self.index]

    def counts(self) -> np.ndarray:
        """How many pixels have each level (int64, in the order of `values`)."""
        if self.index.dtype in (np.uint8, np.uint16):
            per_position = _histogram(self.index, self.table_size)
        else:
            per_position = np.bincount(self.index.ravel(), minlength=self.table_size)
        return per_position if self.slots is None else per_position[self.slots]


def stored_levels(stored: np.ndarray) -> StoredLevels:
    """The levels of a 2-D integer image (see the module docstring for which)."""
    if not stored.dtype.isnative:  # the bit-pattern view below needs native byte order
        stored = stored.astype(stored.dtype.newbyteorder("="))
    vmin, vmax = int(stored.min()), int(stored.max())
    if vmax - vmin >= DENSE_RANGE:  # wider integers: one entry per distinct value
        values, inverse = np.unique(stored, return_inverse=True)
        return StoredLevels(values, inverse.reshape(stored.shape), None, values.size)
    values = np.arange(vmin, vmax + 1, dtype=np.int64).astype(stored.dtype)
    if stored.dtype.itemsize <= 2:  # 8/16-bit: the bit pattern indexes the table
        bits = 8 * stored.dtype.itemsize
        unsigned = np.dtype(f"u{stored.dtype.itemsize}")
        index = np.ascontiguousarray(stored).view(unsigned)
        slots = values.astype(np.int64) & ((1 << bits) - 1)
        return StoredLevels(values, index, slots, 1 << bits)
    return StoredLevels(values, stored.astype(np.int64) - vmin, None, values.size)


def _histogram(index: np.ndarray, bins: int) -> np.ndarray:
    """Exact count of each value 0 … bins-1 in a 2-D uint8/uint16 array (int64).

    OpenCV's histogram is several times faster than `np.bincount` (which first copies the
    array to int64); its float32 counts are exact because no block has more than 2**24 pixels.
    """
    if index.shape[1] > _EXACT_COUNT:  # a row too long to count exactly (beyond any ReadLimits)
        return np.bincount(index.ravel(), minlength=bins)
    counts = np.zeros(bins, dtype=np.int64)
    rows = _EXACT_COUNT // max(1, index.shape[1])
    for start in range(0, index.shape[0], rows):
        block = index[start : start + rows]
        counts += cv2.calcHist([block], [0], None, [bins], [0, bins]).ravel().astype(np.int64)
    return counts
