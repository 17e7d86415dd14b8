"""The fast geometry paths give the bytes the straightforward ones give (mammoseg.area_resize, geometry).

The references here are written out plainly and on purpose: np.pad to the square, then one
cv2.resize with INTER_AREA (what geometry did before the square was cut into blocks), and the
mask as a float32 0/1 square thresholded at half coverage.
"""

import cv2
import numpy as np
import pytest

from mammoseg.area_resize import exact_block, resize_padded
from mammoseg.geometry import apply_to_image, apply_to_mask, chest_wall_side, plan_pad_resize

#: Mammography detector sizes, odd and small ones, squares, integer scales (1024, 1536, 4096).
SHAPES = [
    (4084, 3328), (3328, 4084), (4096, 3328), (3328, 2560), (2294, 1914), (3518, 2800),
    (1021, 700), (760, 1000), (1024, 832), (1536, 1200), (2048, 2048), (513, 512), (512, 512),
    (511, 300), (300, 511), (1001, 777), (640, 641), (97, 64),
]


def reference_image(image: np.ndarray, plan) -> np.ndarray:
    if image.dtype != np.uint16:
        image = image.astype(np.float32)
    pads = ((plan.pad_top, plan.pad_bottom), (plan.pad_left, plan.pad_right))
    square = np.pad(image, pads, mode="constant", constant_values=0)
    if square.shape == (plan.size, plan.size):
        return square
    return cv2.resize(square, (plan.size, plan.size), interpolation=cv2.INTER_AREA)


def reference_mask(mask: np.ndarray, plan) -> np.ndarray:
    coverage = reference_image((mask != 0).astype(np.float32), plan)
    return np.where(coverage >= 0.5 - 1e-6, 255, 0).astype(np.uint8)


def random_blobs(shape, rng, count) -> np.ndarray:
    """Filled ellipses of many sizes anywhere (edges included), as uint8 0/255."""
    mask = np.zeros(shape, np.uint8)
    for _ in range(count):
        center = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(1, max(2, shape[1] // 4))), int(rng.integers(1, max(2, shape[0] // 4))))
        cv2.ellipse(mask, (center, axes, float(rng.uniform(0, 180))), 255, -1)
    return mask


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert np.array_equal(actual, expected), f"{int((actual != expected).sum())} pixels differ"


def test_exact_block_where_the_cut_is_exact():
    assert exact_block(4084, 512) == 1021  # INbreast: 4 blocks of 1021 px → 128 px
    assert exact_block(3328, 512) == 13
    assert exact_block(4096, 512) == 8  # integer scale
    assert exact_block(1021, 512) == 1021  # odd: one block, the whole square
    assert exact_block(512, 512) is None and exact_block(300, 512) is None  # nothing to shrink
    assert 1.0 / (512 / 737) != 737 / 512 and exact_block(737, 512) is None  # OpenCV's scale is inexact
    assert exact_block(2000, 448) is None  # 448/2000 cannot be represented exactly either
    assert exact_block(1024, 512, np.uint16) == 2
    assert exact_block(1024, 512, np.float32) is None  # OpenCV's 2×2 float kernel: body and tail differ
    assert exact_block(1536, 512, np.float32) == 3


@pytest.mark.parametrize("height, width", SHAPES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_apply_to_image_equals_pad_then_resize(height, width, side):
    rng = np.random.default_rng(height * 7 + width)
    image = rng.integers(0, 65536, (height, width), dtype=np.uint16)  # every rounding case
    plan = plan_pad_resize(height, width, side, size=512)
    assert_same(apply_to_image(image, plan), reference_image(image, plan))


@pytest.mark.parametrize("size", [256, 448, 640, 1024])
def test_apply_to_image_other_sizes_and_float_input(size):
    rng = np.random.default_rng(size)
    for height, width in [(2294, 1914), (1914, 2294), (1536, 1200), (700, 1021), (600, 650)]:
        for side in ("left", "right"):
            plan = plan_pad_resize(height, width, side, size=size)
            image = rng.integers(0, 65536, (height, width), dtype=np.uint16)
            assert_same(apply_to_image(image, plan), reference_image(image, plan))
            floats = rng.random((height, width), dtype=np.float32)
            assert_same(apply_to_image(floats, plan), reference_image(floats, plan))


@pytest.mark.parametrize("height, width", SHAPES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_apply_to_mask_equals_pad_then_resize(height, width, side):
    rng = np.random.default_rng(height * 13 + width)
    plan = plan_pad_resize(height, width, side, size=512)
    empty = np.zeros((height, width), bool)
    assert_same(apply_to_mask(empty, plan), reference_mask(empty, plan))
    for count in (1, 1, 3):
        mask = random_blobs((height, width), rng, count)
        assert_same(apply_to_mask(mask, plan), reference_mask(mask, plan))
        assert_same(apply_to_mask(mask != 0, plan), reference_mask(mask, plan))  # bool input, as prepare gives


def test_apply_to_mask_edges_single_pixels_and_noise():
    rng = np.random.default_rng(5)
    cases = [(4084, 3328, 512), (3328, 2560, 512), (1021, 700, 512), (2000, 1600, 448), (300, 200, 512)]
    for height, width, size in cases:
        for side in ("left", "right"):
            plan = plan_pad_resize(height, width, side, size=size)
            masks = [np.zeros((height, width), np.uint8) for _ in range(5)]
            masks[0][0, 0] = masks[0][-1, -1] = 1  # opposite corners: the box is the whole image
            masks[1][:, -1] = 7  # the column against the padding
            masks[2][-1, :] = 255  # the last row
            y, x = int(rng.integers(0, height - 64)), int(rng.integers(0, width - 64))
            masks[3][y : y + 64, x : x + 64] = rng.integers(0, 2, (64, 64))  # salt and pepper
            masks[4][y, x] = 1
            for mask in masks:
                assert_same(apply_to_mask(mask, plan), reference_mask(mask, plan))
            float_mask = masks[3].astype(np.float32) * np.float32(0.25)
            assert_same(apply_to_mask(float_mask, plan), reference_mask(float_mask, plan))


@pytest.mark.parametrize("n", [1024, 1536, 2048, 4096, 4084, 3328, 1000, 2294, 1021, 737, 600])
def test_resize_padded_any_part_anywhere(n):
    """Parts on and off the block boundaries, touching every edge, in uint16 and float32."""
    rng = np.random.default_rng(n)
    block = exact_block(n, 512) or n
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(1, n + 1, 2))
        top = int(rng.choice([0, n - h, int(rng.integers(0, n - h + 1)), min(block, n - h)]))
        left = int(rng.choice([0, n - w, int(rng.integers(0, n - w + 1)), min(block, n - w)]))
        part = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        square = np.zeros((n, n), np.uint16)
        square[top : top + h, left : left + w] = part
        expected = cv2.resize(square, (512, 512), interpolation=cv2.INTER_AREA)
        assert_same(resize_padded(part, top, left, n, 512), expected)
        floats = part.astype(np.float32) / np.float32(65535)
        expected = cv2.resize(square.astype(np.float32) / np.float32(65535), (512, 512), interpolation=cv2.INTER_AREA)
        assert_same(resize_padded(floats, top, left, n, 512), expected)


def test_resize_padded_rejects_a_part_outside_the_square():
    with pytest.raises(ValueError, match="does not fit"):
        resize_padded(np.zeros((10, 10), np.uint16), 95, 0, 100, 50)


def test_chest_wall_side_mean_is_numpys_mean():
    """The OpenCV sum behind chest_wall_side gives numpy's float64 mean exactly, so the side too."""
    from mammoseg.geometry import _mean

    rng = np.random.default_rng(3)
    for dtype, top in ((np.uint16, 65536), (np.uint8, 256)):
        for shape in [(4084, 333), (3328, 256), (7, 1), (1, 9)]:
            for band in (rng.integers(0, top, shape, dtype=dtype), np.full(shape, top - 1, dtype)):
                assert _mean(band) == float(band.mean(dtype=np.float64))
    for _ in range(50):  # near-ties between the two bands
        image = rng.integers(30000, 30002, (200, 150), dtype=np.uint16)
        band = 15
        left, right = image[:, :band].mean(dtype=np.float64), image[:, -band:].mean(dtype=np.float64)
        assert chest_wall_side(image) == ("right" if right > left else "left")
