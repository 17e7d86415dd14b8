"""Breast crop, pad-to-square / resize and its inverse (mammoseg.geometry)."""

import cv2
import numpy as np
import pytest

from mammoseg.geometry import (
    CROP_FIELDS,
    PLAN_FIELDS,
    PadResize,
    apply_to_image,
    apply_to_mask,
    chest_wall_side,
    find_breast_box,
    invert_mask,
    invert_probability,
    plan_pad_resize,
    standardise,
)
from mammoseg.manifest import CROP_COLUMNS
from mammoseg.sources.synthetic.phantom import add_collimator_border, add_film_label, random_mass, render_phantom


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a != 0, b != 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def ellipse_mask(shape, center, axes, angle) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (center, axes, angle), 255, -1)
    return mask


# ----------------------------------------------------------------------------- plans


@pytest.mark.parametrize(
    "height, width, side, pads",
    [
        (3328, 2560, "left", (0, 0, 0, 768)),  # taller: pad columns away from the chest wall
        (3328, 2560, "right", (0, 0, 768, 0)),
        (1001, 777, "right", (0, 0, 224, 0)),  # odd sizes
        (2560, 3328, "left", (0, 768, 0, 0)),  # wider: pad rows at the bottom
        (2560, 3328, "right", (0, 768, 0, 0)),
        (640, 640, "left", (0, 0, 0, 0)),
    ],
)
def test_plan_pads_to_square_away_from_chest_wall(height, width, side, pads):
    plan = plan_pad_resize(height, width, side, size=512)
    assert (plan.pad_top, plan.pad_bottom, plan.pad_left, plan.pad_right) == pads
    assert plan.padded_height == plan.padded_width == max(height, width)
    assert (plan.orig_height, plan.orig_width, plan.size) == (height, width, 512)


def test_plan_row_round_trip_uses_manifest_column_names():
    plan = plan_pad_resize(1001, 777, "right", size=256)
    row = plan.to_row()
    assert list(row) == ["orig_height", "orig_width", "pad_top", "pad_bottom", "pad_left", "pad_right", "size"]
    as_csv = {k: str(v) for k, v in row.items()} | {"id": "x", "laterality": "R"}
    assert PadResize.from_row(as_csv) == plan
    with pytest.raises(ValueError, match="pad_left"):
        PadResize.from_row({k: v for k, v in as_csv.items() if k != "pad_left"})
    with pytest.raises(ValueError, match="not an integer"):
        PadResize.from_row(as_csv | {"size": "2.5"})


def test_plan_rejects_bad_input():
    with pytest.raises(ValueError, match="chest_side"):
        plan_pad_resize(10, 5, "top")
    with pytest.raises(ValueError):
        plan_pad_resize(0, 5, "left")
    with pytest.raises(ValueError, match="square"):
        PadResize(10, 5, 0, 0, 0, 4, 8)
    with pytest.raises(ValueError):
        PadResize(10, 5, 0, 0, -1, 6, 8)


# ----------------------------------------------------------------------------- chest wall


def test_chest_wall_side_on_synthetic_breasts():
    h, w = 120, 80
    yy, xx = np.mgrid[:h, :w]
    # Half-disc of tissue against the left edge, faint noise elsewhere.
    rng = np.random.default_rng(0)
    left = np.where((xx / 60.0) ** 2 + ((yy - h / 2) / 55.0) ** 2 <= 1, 30000, 0) + rng.integers(0, 500, (h, w))
    left = left.astype(np.uint16)
    assert chest_wall_side(left) == "left"
    assert chest_wall_side(left[:, ::-1]) == "right"
    assert chest_wall_side(left.astype(np.float32) / 65535) == "left"
    # A narrow bright label near the far edge does not outweigh the breast.
    labelled = left.copy()
    labelled[5:15, -8:] = 65535
    assert chest_wall_side(labelled) == "left"
    # Ties (e.g. an empty image) go to "left"; a one-column image works.
    assert chest_wall_side(np.zeros((10, 10), np.uint16)) == "left"
    assert chest_wall_side(np.ones((10, 1))) == "left"
    with pytest.raises(ValueError):
        chest_wall_side(np.zeros((2, 2, 3)))


# ----------------------------------------------------------------------------- forward


def test_apply_to_image_area_average_known_values():
    # 8×4 image, chest on the left → padded on the right to 8×8, resized ×1/2 to 4×4:
    # each prepared pixel is the mean of a 2×2 block (padding counts as 0).
    image = (np.arange(32, dtype=np.uint16).reshape(8, 4) * 1001 + 7).astype(np.uint16)
    plan = plan_pad_resize(8, 4, "left", size=4)
    out = apply_to_image(image, plan)
    padded = np.zeros((8, 8), np.float64)
    padded[:, :4] = image
    expected = np.rint(padded.reshape(4, 2, 4, 2).mean(axis=(1, 3))).astype(np.uint16)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, expected)

    out_float = apply_to_image(image.astype(np.float64) / 65535, plan)
    assert out_float.dtype == np.float32
    np.testing.assert_allclose(out_float, padded.reshape(4, 2, 4, 2).mean(axis=(1, 3)) / 65535, atol=1e-6)

    # Chest on the right: the image sits on the right half.
    out_right = apply_to_image(image, plan_pad_resize(8, 4, "right", size=4))
    np.testing.assert_array_equal(out_right[:, 2:], expected[:, :2])
    assert not out_right[:, :2].any()


def test_apply_to_mask_half_coverage_rule():
    # 4×4 original, size 2: each prepared pixel covers a 2×2 block; set when ≥ 2 of 4 set.
    mask = np.array(
        [
            [1, 1, 1, 0],
            [0, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 0, 0],
        ],
        np.uint8,
    )
    out = apply_to_mask(mask * 200, plan_pad_resize(4, 4, "left", size=2))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[255, 0], [255, 0]])


def test_shape_mismatch_is_an_error():
    plan = plan_pad_resize(100, 80, "left", size=64)
    with pytest.raises(ValueError, match="100, 80"):
        apply_to_image(np.zeros((80, 100), np.uint16), plan)
    with pytest.raises(ValueError, match="64, 64"):
        invert_mask(np.zeros((32, 32), np.uint8), plan)


# ----------------------------------------------------------------------------- inverse


def test_invert_probability_reproduces_a_linear_ramp():
    # A ramp on the prepared grid comes back as the same ramp, evaluated at each original
    # pixel's position on the prepared grid (pixel centres: u = (x + 0.5) / f − 0.5).
    plan = plan_pad_resize(96, 64, "left", size=32)  # N = 96, f = 3
    u = np.arange(32, dtype=np.float64)
    prob = np.tile(0.01 * u + 0.2, (32, 1)).astype(np.float32)
    back = invert_probability(prob, plan)
    assert back.dtype == np.float32 and back.shape == (96, 64)
    x = np.arange(64)
    expected = 0.01 * ((x + 0.5) / 3 - 0.5) + 0.2
    np.testing.assert_allclose(back[:, 2:], np.tile(expected[2:], (96, 1)), atol=1e-6)  # interior columns
    # Chest on the right: the original lies on the right part of the square.
    back_r = invert_probability(prob, plan_pad_resize(96, 64, "right", size=32))
    expected_r = 0.01 * ((x + 32 + 0.5) / 3 - 0.5) + 0.2
    np.testing.assert_allclose(back_r[:, :-2], np.tile(expected_r[:-2], (96, 1)), atol=1e-6)


@pytest.mark.parametrize(
    "height, width, side",
    [(3328, 2560, "left"), (3328, 2560, "right"), (2560, 3328, "left"), (1001, 777, "right"), (777, 1001, "left")],
)
def test_prepared_mask_survives_invert_then_prepare_exactly(height, width, side):
    """invert_mask is the inverse of apply_to_mask on the prepared grid: no pixel changes."""
    plan = plan_pad_resize(height, width, side, size=128)
    inside = apply_to_mask(np.ones((height, width), np.uint8), plan) > 0  # prepared pixels on the image
    rng = np.random.default_rng(height + width)
    mask = np.zeros((128, 128), np.uint8)
    for _ in range(4):
        center = tuple(float(v) for v in rng.uniform(10, 118, 2))
        axes = tuple(float(v) for v in rng.uniform(1, 30, 2))
        cv2.ellipse(mask, (center, axes, float(rng.uniform(0, 180))), 255, -1)
    mask[3, 3] = 255  # a single-pixel component survives too
    mask = np.where(inside, mask, 0).astype(np.uint8)
    back = invert_mask(mask, plan)
    assert back.shape == (height, width) and back.dtype == np.uint8
    assert set(np.unique(back)) <= {0, 255}
    np.testing.assert_array_equal(apply_to_mask(back, plan), mask)


@pytest.mark.parametrize("side", ["left", "right"])
def test_mask_round_trip_iou_full_field(side):
    """Original → 512 → original at 3328×2560: IoU ≥ 0.98 for masses ≥ 50 prepared px
    across (≈ 330 original px), and never worse than 1 − 1.25/D for a mass D prepared px
    across (the half-pixel quantisation limit of a binary mask on the coarser grid)."""
    height, width, size = 3328, 2560, 512
    plan = plan_pad_resize(height, width, side, size=size)
    f = plan.padded_size / size
    rng = np.random.default_rng(7 if side == "left" else 8)
    for d_prepared in (20, 35, 50, 80):
        d = d_prepared * f
        center = (float(rng.uniform(d, width - d)), float(rng.uniform(d, height - d)))
        mask = ellipse_mask((height, width), center, (d, d * float(rng.uniform(0.7, 1.0))), float(rng.uniform(0, 180)))
        back = invert_mask(apply_to_mask(mask, plan), plan)
        score = iou(back, mask)
        assert score >= 1 - 1.25 / d_prepared, (d_prepared, score)
        if d_prepared >= 50:
            assert score >= 0.98, (d_prepared, score)


def test_mask_round_trip_wider_than_tall_and_upsampling():
    # Wider than tall (padding at the bottom), odd sizes, a mass touching the bottom edge.
    plan = plan_pad_resize(777, 1001, "left", size=256)
    mask = ellipse_mask((777, 1001), (500.0, 740.0), (240.0, 180.0), 20.0)
    assert iou(invert_mask(apply_to_mask(mask, plan), plan), mask) >= 0.98
    # An original smaller than the prepared size (enlarged, then shrunk back).
    small = plan_pad_resize(61, 45, "right", size=128)
    mask = ellipse_mask((61, 45), (22.0, 30.0), (20.0, 14.0), 0.0)
    assert iou(invert_mask(apply_to_mask(mask, small), small), mask) >= 0.98


# ----------------------------------------------------------------------------- breast crop


def cropped_plan(height, width, box, side, size):
    """The plan `standardise(..., crop=True)` makes for the crop box (row0, row1, col0, col1)."""
    r0, r1, c0, c1 = box
    plan = plan_pad_resize(r1 - r0, c1 - c0, side, size=size)
    return PadResize(height, width, plan.pad_top, plan.pad_bottom, plan.pad_left, plan.pad_right, size,
                     r0, height - r1, c0, width - c1)


def test_cropped_plan_row_round_trip_and_rows_without_crop_columns():
    plan = cropped_plan(1001, 777, (40, 950, 0, 500), "left", 256)
    assert (plan.cropped_height, plan.cropped_width, plan.padded_size) == (910, 500, 910)
    assert (plan.pad_right, plan.crop_bottom, plan.crop_right) == (410, 51, 277)
    row = plan.to_row()
    assert list(row)[7:] == list(CROP_COLUMNS) == list(CROP_FIELDS)
    assert PadResize.from_row({k: str(v) for k, v in row.items()}) == plan
    # A folder prepared with the crop writes the columns for an image it did not crop too ...
    uncropped = plan_pad_resize(1001, 777, "right", size=256)
    assert list(uncropped.to_row(with_crop=True))[7:] == list(CROP_COLUMNS)
    assert list(uncropped.to_row()) == list(PLAN_FIELDS)
    # ... and a row without them (a folder prepared before the crop) reads as no crop.
    assert PadResize.from_row({k: str(v) for k, v in uncropped.to_row().items()}) == uncropped
    with pytest.raises(ValueError, match="crops the whole image away"):
        PadResize(10, 10, 0, 0, 0, 0, 8, 5, 5, 0, 0)


@pytest.mark.parametrize(
    "height, width, box, side",
    [(3328, 2560, (200, 3100, 0, 1700), "left"), (3328, 2560, (0, 3328, 900, 2560), "right"),
     (1001, 777, (17, 901, 0, 777), "left"), (777, 1001, (100, 700, 301, 1001), "right")],
)
def test_cropped_prepared_mask_survives_invert_then_prepare_exactly(height, width, box, side):
    plan = cropped_plan(height, width, box, side, 128)
    inside = apply_to_mask(np.ones((height, width), np.uint8), plan) > 0
    rng = np.random.default_rng(height + width + box[0])
    mask = np.zeros((128, 128), np.uint8)
    for _ in range(4):
        center = tuple(float(v) for v in rng.uniform(10, 118, 2))
        axes = tuple(float(v) for v in rng.uniform(1, 30, 2))
        cv2.ellipse(mask, (center, axes, float(rng.uniform(0, 180))), 255, -1)
    mask = np.where(inside, mask, 0).astype(np.uint8)
    back = invert_mask(mask, plan)
    assert back.shape == (height, width) and back.dtype == np.uint8
    r0, r1, c0, c1 = box
    outside = np.ones((height, width), bool)
    outside[r0:r1, c0:c1] = False
    assert not back[outside].any()  # nothing outside the crop box
    np.testing.assert_array_equal(apply_to_mask(back, plan), mask)


@pytest.mark.parametrize("side", ["left", "right"])
def test_cropped_mask_round_trip_iou(side):
    """Original → crop → 512 → original: IoU ≥ 1 − 1.25/D for a mass D prepared px across, as uncropped."""
    height, width, size = 3328, 2560, 512
    box = (300, 3000, 0, 1500) if side == "left" else (300, 3000, 1060, 2560)
    plan = cropped_plan(height, width, box, side, size)
    f = plan.padded_size / size
    rng = np.random.default_rng(17 if side == "left" else 18)
    for d_prepared in (20, 35, 50, 80):
        d = d_prepared * f
        center = (float(rng.uniform(box[2] + d, box[3] - d)), float(rng.uniform(box[0] + d, box[1] - d)))
        mask = ellipse_mask((height, width), center, (d, d * float(rng.uniform(0.7, 1.0))), float(rng.uniform(0, 180)))
        back = invert_mask(apply_to_mask(mask, plan), plan)
        assert back.shape == (height, width)
        score = iou(back, mask)
        assert score >= 1 - 1.25 / d_prepared, (d_prepared, score)


def test_apply_to_image_crops_before_padding():
    image = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 100
    plan = PadResize(12, 10, 0, 0, 0, 2, 3, 3, 3, 2, 4)  # rows 3..8, columns 2..5, 2 columns padded, 6 → 3
    region = image[3:9, 2:6].astype(np.float64)
    square = np.zeros((6, 6))
    square[:, :4] = region
    expected = square.reshape(3, 2, 3, 2).mean(axis=(1, 3))  # 2×2 area averages
    np.testing.assert_array_equal(apply_to_image(image, plan), np.round(expected).astype(np.uint16))
    prob = invert_probability(np.ones((3, 3), np.float32), plan)
    assert prob.shape == (12, 10) and prob[3:9, 2:6].min() == 1.0
    prob[3:9, 2:6] = 0
    assert not prob.any()


def _phantom(shape, laterality, view, seed, markers=True):
    rng = np.random.default_rng(seed)
    phantom = render_phantom(rng, shape, laterality, view, mass=random_mass(rng, shape[1], depth=0.5))
    if markers:
        add_collimator_border(phantom)
        add_film_label(np.random.default_rng(seed + 1), phantom, f"{laterality} {view}")
    return phantom, (phantom.image * 65535).astype(np.uint16)


def _contains(box, mask) -> bool:
    rows, cols = np.nonzero(mask)
    return box.row0 <= rows.min() and rows.max() < box.row1 and box.col0 <= cols.min() and cols.max() < box.col1


def _overlaps(box, rect) -> bool:
    r0, r1, c0, c1 = rect
    return r0 < box.row1 and box.row0 < r1 and c0 < box.col1 and box.col0 < c1


@pytest.mark.parametrize("shape, laterality, view, seed", [
    ((640, 512), "L", "CC", 1), ((640, 512), "R", "MLO", 2), ((500, 400), "R", "CC", 3), ((500, 400), "L", "MLO", 4),
    ((1000, 800), "L", "CC", 5), ((128, 112), "R", "MLO", 6),
])
def test_breast_box_holds_the_breast_and_leaves_label_and_border_out(shape, laterality, view, seed):
    phantom, image = _phantom(shape, laterality, view, seed)
    assert phantom.label_box is not None and phantom.border_box is not None and phantom.mask.any()
    box = find_breast_box(image)
    assert _contains(box, phantom.breast) and _contains(box, phantom.mask)
    assert not _overlaps(box, phantom.label_box) and not _overlaps(box, phantom.border_box)
    # The breast stays against the chest wall: the box reaches that edge.
    assert (box.col0 == 0) if laterality == "L" else (box.col1 == shape[1])
    standard = standardise(image, 128, crop=True)
    assert standard.chest_side == ("left" if laterality == "L" else "right")
    assert (standard.plan.crop_top, standard.plan.orig_height - standard.plan.crop_bottom,
            standard.plan.crop_left, standard.plan.orig_width - standard.plan.crop_right) == tuple(box)


def test_a_bright_frame_is_not_the_breast():
    """A collimator frame along all four edges, touching the breast at the chest wall: the box is
    the breast's (plus margin), not the frame's; with a dark frame too."""
    phantom, image = _phantom((640, 512), "L", "CC", 11, markers=False)
    framed = image.copy()
    framed[:12], framed[-12:], framed[:, :10], framed[:, -10:] = 65000, 65000, 65000, 65000
    box = find_breast_box(framed)
    rows, cols = np.nonzero(phantom.breast)
    margin = round(0.02 * 640)
    assert box.col0 == 0 and _contains(box, phantom.breast)  # against the chest wall, as the breast lay
    assert box.col1 <= cols.max() + 1 + margin + 3 and box.col1 < 512 - 10  # the far frame is left out
    assert box.row0 >= rows.min() - margin - 3 and box.row1 <= rows.max() + 1 + margin + 3
    dark = image.copy()
    dark[:12], dark[-12:], dark[:, -10:] = 0, 0, 0
    assert find_breast_box(dark) == find_breast_box(image)


def test_a_label_and_burned_in_text_are_not_the_breast():
    phantom, image = _phantom((640, 512), "R", "CC", 12, markers=False)
    rows, cols = np.nonzero(phantom.breast)
    assert cols.min() >= 100  # room at the left for the label and the text
    marked = image.copy()
    marked[4:34, 4:70] = 60000  # a film label touching nothing
    text = np.zeros(image.shape, np.uint8)  # burned-in text (OpenCV draws text on 8-bit images only)
    cv2.putText(text, "ACME", (6, 330), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    marked[text > 0] = 62000
    box = find_breast_box(marked)
    assert box == find_breast_box(image) and _contains(box, phantom.breast) and box.col1 == 512
    assert not _overlaps(box, (4, 34, 4, 70)) and box.col0 > 70


@pytest.mark.parametrize("image", [np.zeros((300, 200), np.uint16), np.full((300, 200), 1234, np.uint16),
                                   np.zeros((5, 3), np.uint16)])
def test_nothing_found_is_no_crop(image):
    assert find_breast_box(image) == (0, image.shape[0], 0, image.shape[1])
    standard = standardise(image, 16, crop=True)
    assert not standard.plan.cropped
    np.testing.assert_array_equal(standard.image, standardise(image, 16).image)


def test_standardise_without_crop_is_unchanged():
    phantom, image = _phantom((500, 400), "L", "MLO", 13)
    plain = standardise(image, 96)
    side = chest_wall_side(image)
    plan = plan_pad_resize(500, 400, side, size=96)
    assert plain.plan == plan and not plan.cropped
    np.testing.assert_array_equal(plain.image, apply_to_image(image, plan))
