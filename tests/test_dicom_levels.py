"""Per-level tables applied to stored values (mammoseg.dicom.levels) equal the plain way of doing it.

The reference is what `dicom._window` did before: levels from the minimum to the maximum (or
the distinct values of wide data), int64 offsets from the minimum, `lut[offsets]` and
`np.bincount(offsets)`.
"""

import numpy as np
import pytest

from mammoseg.dicom.levels import DENSE_RANGE, stored_levels


def reference(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(levels, per-pixel offsets into them)."""
    vmin, vmax = int(stored.min()), int(stored.max())
    if vmax - vmin < DENSE_RANGE:
        return np.arange(vmin, vmax + 1, dtype=np.int64), stored.astype(np.int64) - vmin
    levels, offsets = np.unique(stored.astype(np.int64), return_inverse=True)
    return levels, offsets.reshape(stored.shape)


def random_table(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, n).astype(np.uint16)


CASES = [
    ("uint16 12-bit", np.uint16, 0, 4096),
    ("uint16 full range", np.uint16, 0, 65536),
    ("uint16 narrow, high", np.uint16, 60000, 60010),
    ("int16 signed", np.int16, -32768, 32768),
    ("int16 negative only", np.int16, -2000, -1000),
    ("uint8", np.uint8, 0, 256),
    ("int8", np.int8, -128, 128),
    ("uint32 narrow", np.uint32, 3_000_000_000, 3_000_070_000),
    ("int32 narrow", np.int32, -50_000, 50_000),
    ("int32 wide", np.int32, -(2**30), 2**30),
]


@pytest.mark.parametrize("name, dtype, low, high", CASES, ids=[c[0] for c in CASES])
def test_apply_and_counts_equal_the_offset_way(name, dtype, low, high):
    rng = np.random.default_rng(abs(low) + high)
    stored = rng.integers(low, high, (301, 257), dtype=np.int64).astype(dtype)
    levels, offsets = reference(stored)
    lut = random_table(levels.size)
    found = stored_levels(stored)
    assert found.values.dtype == stored.dtype and np.array_equal(found.values.astype(np.int64), levels)
    out = found.apply(lut)
    assert out.dtype == np.uint16 and np.array_equal(out, lut[offsets])
    counts = found.counts()
    assert counts.dtype == np.int64 and np.array_equal(counts, np.bincount(offsets.ravel(), minlength=levels.size))


def test_big_endian_and_strided_input():
    rng = np.random.default_rng(2)
    native = rng.integers(-3000, 3000, (200, 300)).astype(np.int16)
    for stored in (native.astype(">i2"), native[::2, 1::3], native.astype(">u2")):
        levels, offsets = reference(stored)
        lut = random_table(levels.size)
        found = stored_levels(stored)
        assert np.array_equal(found.apply(lut), lut[offsets])
        assert np.array_equal(found.counts(), np.bincount(offsets.ravel(), minlength=levels.size))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_counts_stay_exact_beyond_float32_integers(dtype):
    """OpenCV counts in float32 (exact to 2**24): 17.2 Mpx of one value must still count exactly."""
    stored = np.zeros((4200, 4100), dtype=dtype)
    stored[0, 0], stored[17, 23], stored[-1, -1] = 1, 5, 3
    zeros = 4200 * 4100 - 3  # odd and above 2**24: float32 cannot hold it
    assert float(np.float32(zeros)) != zeros
    assert stored_levels(stored).counts().tolist() == [zeros, 1, 0, 1, 0, 1]
