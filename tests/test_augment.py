"""Table 1 augmentations: kinds, ranges, alignment, 16-bit precision, determinism."""

import copy

import albumentations as A
import numpy as np
import pytest

from mammoseg.training.augment import (
    FloatMedianBlur,
    build_eval_transform,
    build_train_transform,
    describe_train_transform,
    translate_px,
)
from mammoseg.seeding import derive_seed, seed_transform

SIZE, CROP = 128, 112


def square_case(size=SIZE):
    """An off-centre bright square on a dark background, mask = the square."""
    mask = np.zeros((size, size), np.uint8)
    mask[20:60, 30:58] = 1
    image = np.where(mask > 0, 1.0, 0.0).astype(np.float32)
    return image, mask


def ramp(size=256):
    """A 256×256 image holding each of the 65536 16-bit levels once."""
    return (np.arange(size * size, dtype=np.float64) / (size * size - 1)).reshape(size, size).astype(np.float32)


def leaves(compose):
    """Every transform of a Compose, OneOf children flattened."""
    out = []
    for t in compose.transforms:
        out.extend(t.transforms if isinstance(t, A.OneOf) else [t])
    return out


def test_full_transform_output_kinds():
    image, mask = square_case()
    rng = np.random.default_rng(0)
    image = np.clip(image * 0.8 + rng.random(image.shape, dtype=np.float32) * 0.2, 0, 1)
    t = build_train_transform(CROP, SIZE, seed=3)
    for _ in range(8):
        out = t(image=image, mask=mask)
        assert out["image"].dtype == np.float32 and out["image"].shape == (CROP, CROP)
        assert out["mask"].dtype == np.uint8 and out["mask"].shape == (CROP, CROP)
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        assert set(np.unique(out["mask"])) <= {0, 1}


def test_geometric_transforms_keep_mask_aligned_with_image():
    image, mask = square_case()
    t = build_train_transform(CROP, SIZE, geometric_only=True, seed=11)
    moved = 0
    for _ in range(12):
        out = t(image=image, mask=mask)
        img, m = out["image"], out["mask"]
        assert set(np.unique(m)) <= {0, 1}
        # image = mask before the transform, so after it they differ only along the square's edge
        disagree = np.count_nonzero((img > 0.5) != (m > 0))
        assert disagree <= 0.25 * max(1, np.count_nonzero(m)) + 4
        # the crop/shift really moved the square (or the test would prove nothing)
        moved += not np.array_equal(m, mask[:CROP, :CROP])
    assert moved >= 10


def test_every_table1_row_present_with_p_half():
    t = build_train_transform(448, 512)
    kinds = [type(x).__name__ for x in t.transforms]
    assert kinds == [
        "Affine", "Affine", "Affine", "RandomCrop", "HorizontalFlip", "RandomGamma",
        "RandomBrightnessContrast", "SaltAndPepper", "GaussNoise", "OneOf", "OneOf",
        "CoarseDropout", "_Finalise",
    ]
    probs = [x.p for x in t.transforms]
    assert probs[3] == 1.0 and probs[-1] == 1.0  # crop always, final clip always
    assert all(p == 0.5 for i, p in enumerate(probs) if i not in (3, len(probs) - 1))
    rot, scale, shift = t.transforms[:3]
    assert tuple(rot.rotate) == (-3.0, 3.0)
    assert scale.scale == {"x": (0.7, 1.3), "y": (0.7, 1.3)} and scale.keep_ratio
    assert shift.translate_px == {"x": (-50, 50), "y": (-50, 50)}
    assert (t.transforms[3].height, t.transforms[3].width) == (448, 448)
    assert tuple(t.transforms[5].gamma_limit) == (50, 180)
    gauss = t.transforms[9].transforms
    assert [g.blur_limit for g in gauss] == [(3, 3), (7, 7), (11, 11)]
    assert all(tuple(g.sigma_limit) == (1.0, 5.0) for g in gauss)
    assert [m.ksize for m in t.transforms[10].transforms] == [3, 7, 11]
    assert t.transforms[11].fill_mask is None
    assert len(describe_train_transform()) == 12  # the twelve rows of Table 1
    assert [r["split"] for r in describe_train_transform()] == ["host"] * 10 + ["device"] * 2


def test_pixel_amounts_scale_with_image_size():
    assert translate_px(512) == 50 and translate_px(256) == 25 and translate_px(128) == 12
    t = build_train_transform(224, 256)
    assert t.transforms[2].translate_px == {"x": (-25, 25), "y": (-25, 25)}


LEAVES = leaves(build_train_transform(192, 256))


def test_leaf_count():
    # 3 affine + crop + flip + gamma + brightness/contrast + s&p + noise + 3 gaussian + 3 median + cutout + final
    assert len(LEAVES) == 17


@pytest.mark.parametrize("index", range(len(LEAVES)))
def test_each_transform_keeps_16bit_precision(index):
    one = copy.deepcopy(LEAVES[index])
    one.p = 1.0
    out = A.Compose([one], seed=0)(image=ramp(), mask=np.zeros((256, 256), np.uint8))["image"]
    assert out.dtype == np.float32
    assert len(np.unique(out)) > 4096, type(one).__name__


def test_whole_pipeline_keeps_more_than_256_levels():
    t = build_train_transform(192, 256, seed=5)
    for _ in range(4):
        out = t(image=ramp(), mask=np.zeros((256, 256), np.uint8))["image"]
        assert len(np.unique(out)) > 256


def test_albumentations_median_blur_would_quantise_so_ours_does_not():
    # The reason FloatMedianBlur exists: the library's MedianBlur goes through 8 bits.
    theirs = A.MedianBlur(blur_limit=(3, 3), p=1.0)(image=ramp())["image"]
    ours = FloatMedianBlur(ksize=3, p=1.0)(image=ramp())["image"]
    assert len(np.unique(theirs)) <= 256 < len(np.unique(ours))


@pytest.mark.parametrize("k", [3, 5, 7, 11])
def test_float_median_blur_matches_brute_force(k):
    rng = np.random.default_rng(k)
    img = rng.random((23, 19), dtype=np.float32)
    r = k // 2
    padded = np.pad(img, r, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k))
    expected = np.median(windows.reshape(23, 19, -1), axis=-1).astype(np.float32)
    got = FloatMedianBlur(ksize=k, p=1.0)(image=img)["image"]
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="odd"):
        FloatMedianBlur(ksize=4)


def test_cutout_covers_a_fifth_and_leaves_mask():
    t = build_train_transform(100, 100)
    cut = copy.deepcopy(t.transforms[11])
    cut.p = 1.0
    image, mask = np.ones((100, 100), np.float32), np.ones((100, 100), np.uint8)
    out = A.Compose([cut], seed=1)(image=image, mask=mask)
    assert abs(np.mean(out["image"] == 0) - 0.2) < 0.02
    assert np.array_equal(out["mask"], mask)


def test_small_image_is_padded_to_the_crop():
    image, mask = square_case(64)
    out = build_train_transform(96, 64, geometric_only=True, seed=0)(image=image, mask=mask)
    assert out["image"].shape == (96, 96) and out["mask"].shape == (96, 96)
    assert out["mask"].sum() > 0


def test_eval_transform_is_identity():
    image, mask = square_case()
    out = build_eval_transform()(image=image, mask=mask)
    assert np.array_equal(out["image"], image) and out["image"].dtype == np.float32
    assert np.array_equal(out["mask"], mask) and out["mask"].dtype == np.uint8


def test_seeded_and_reseeded_transforms_are_deterministic():
    image, mask = square_case()
    a, b = build_train_transform(CROP, SIZE, seed=7), build_train_transform(CROP, SIZE, seed=7)
    for _ in range(3):
        oa, ob = a(image=image, mask=mask), b(image=image, mask=mask)
        assert np.array_equal(oa["image"], ob["image"]) and np.array_equal(oa["mask"], ob["mask"])
    c = build_train_transform(CROP, SIZE, seed=8)
    outs_c = [c(image=image, mask=mask)["image"] for _ in range(3)]
    outs_a = [build_train_transform(CROP, SIZE, seed=7)(image=image, mask=mask)["image"]]
    assert not all(np.array_equal(outs_a[0], oc) for oc in outs_c)
    # per-sample reseeding: result depends on (seed, epoch, index) only, not on call history
    s = derive_seed(0, 2, 5)
    assert s == derive_seed(0, 2, 5) and s != derive_seed(0, 2, 6) and s != derive_seed(0, 3, 5)
    seed_transform(a, s)
    first = a(image=image, mask=mask)["image"]
    for _ in range(2):
        b(image=image, mask=mask)
    seed_transform(b, s)
    assert np.array_equal(first, b(image=image, mask=mask)["image"])


def test_reseeded_rows_fire_independently_with_p_half():
    # Each row must fire in about half the samples, independently of the others
    # (albumentations' own set_random_seed would make them all fire together).
    t = build_train_transform(48, 64)
    t.save_applied_params = True
    image, mask = np.full((64, 64), 0.5, np.float32), np.zeros((64, 64), np.uint8)
    n, fired, sizes = 200, {}, set()
    for i in range(n):
        seed_transform(t, derive_seed(0, 0, i))
        applied = [name for name, _ in t(image=image, mask=mask)["applied_transforms"]]
        sizes.add(len(applied))
        for name in set(applied):
            fired[name] = fired.get(name, 0) + applied.count(name)
    assert fired["RandomCrop"] == n
    for name in ("HorizontalFlip", "RandomGamma", "SaltAndPepper", "GaussNoise", "CoarseDropout"):
        assert 0.38 * n < fired[name] < 0.62 * n, (name, fired[name])
    assert 0.38 * 3 * n < fired["Affine"] < 0.62 * 3 * n
    assert len(sizes) >= 5  # different numbers of rows per sample, not all-or-nothing


def test_split_pipeline_defers_exactly_the_last_two_rows():
    ref, split = build_train_transform(448, 512), build_train_transform(448, 512, device_rows=True)
    kinds = [type(x).__name__ for x in split.transforms]
    assert kinds == [type(x).__name__ for x in ref.transforms][:10] + ["OneOf", "DeferredCutout", "_Finalise"]
    assert [type(m).__name__ for m in split.transforms[10].transforms] == ["DeferredMedianBlur"] * 3
    assert [m.ksize for m in split.transforms[10].transforms] == [3, 7, 11]
    assert [x.p for x in split.transforms] == [x.p for x in ref.transforms]
    cut, ref_cut = split.transforms[11], ref.transforms[11]
    for name in ("num_holes_range", "hole_height_range", "hole_width_range", "fill", "fill_mask"):
        assert getattr(cut, name) == getattr(ref_cut, name), name
    assert isinstance(cut, A.CoarseDropout)


def test_split_pipeline_leaves_the_image_to_the_device_and_always_returns_a_record():
    image, mask = square_case()
    geometric = build_train_transform(CROP, SIZE, geometric_only=True, device_rows=True, seed=2)
    out = geometric(image=image, mask=mask)
    assert out["device_params"].dtype == np.int64 and not out["device_params"].any()
    assert "device_params" not in build_train_transform(CROP, SIZE, seed=2)(image=image, mask=mask)
    deferred = copy.deepcopy(build_train_transform(CROP, SIZE, device_rows=True).transforms[11])
    deferred.p = 1.0
    before = np.ones((CROP, CROP), np.float32)
    out = A.Compose([deferred], seed=0)(image=before, mask=np.ones((CROP, CROP), np.uint8))
    assert np.array_equal(out["image"], before) and out["device_params"][2] == 1
