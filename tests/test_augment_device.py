"""Device rows of Table 1 (median blur, cutout): exact median, seeded records, split = reference."""

from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, SequentialSampler

from mammoseg.training.augment import FloatMedianBlur, build_eval_transform, build_train_transform
from mammoseg.training.device_augment import (
    CUTOUT,
    CUTOUT_BOTTOM,
    CUTOUT_LEFT,
    CUTOUT_RIGHT,
    CUTOUT_TOP,
    MEDIAN,
    MEDIAN_KERNEL,
    N_PARAMS,
    apply_device_rows,
    median_blur,
    prepare_batch,
)
from mammoseg.training.dataset import (
    PreparedDataset,
    SeededSampler,
    default_num_workers,
    loader_options,
    worker_init,
)
from mammoseg.io import write_png
from mammoseg.training.median_blur import chunk_shape, median_filter, median_program
from mammoseg.seeding import derive_seed, seed_transform

SHAPES = [(3, 23, 19), (2, 5, 3), (1, 1, 1), (2, 40, 33), (1, 12, 4)]


def reference_median(images: np.ndarray, k: int) -> np.ndarray:
    """The host row (cv2 for k <= 5, SciPy otherwise), one image at a time."""
    row = FloatMedianBlur(ksize=k, p=1.0)
    return np.stack([row(image=im)["image"] for im in images])


def random_images(shape, seed: int) -> np.ndarray:
    """Random float32 images with ties: a band on the 16-bit grid and a constant corner."""
    rng = np.random.default_rng(seed)
    x = rng.random(shape, dtype=np.float32)
    x[:, : max(1, shape[1] // 3)] = np.round(x[:, : max(1, shape[1] // 3)] * 20) / 20
    x[:, :2, :2] = 0.5
    return x


def record(median_kernel: int = 0, hole: tuple[int, int, int, int] | None = None) -> list[int]:
    """A device-row record; hole = (top, left, bottom, right)."""
    r = [0] * N_PARAMS
    if median_kernel:
        r[MEDIAN], r[MEDIAN_KERNEL] = 1, median_kernel
    if hole is not None:
        r[CUTOUT] = 1
        r[CUTOUT_TOP], r[CUTOUT_LEFT], r[CUTOUT_BOTTOM], r[CUTOUT_RIGHT] = hole
    return r


@pytest.mark.parametrize("k", [3, 5, 7, 11])
@pytest.mark.parametrize("shape", SHAPES)
def test_median_equals_cpu_reference_including_borders(k, shape):
    x = random_images(shape, seed=k * 100 + shape[1])
    expected = reference_median(x, k)
    assert np.array_equal(median_blur(torch.from_numpy(x), k).numpy(), expected)
    # the selection network itself (the CUDA path), in whole images and in small chunks
    for scratch in (64 << 20, 4000, 1):
        assert np.array_equal(median_filter(torch.from_numpy(x), k, scratch).numpy(), expected), scratch


def test_cpu_median_restores_the_thread_count():
    threads = torch.get_num_threads()
    median_blur(torch.from_numpy(random_images((1, 12, 12), seed=0)), 7)
    assert torch.get_num_threads() == threads


def test_median_on_a_448_crop_of_16bit_values_is_exact():
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 65536, (2, 448, 448)) / 65535).astype(np.float32)
    for k in (7, 11):
        assert np.array_equal(median_filter(torch.from_numpy(x), k).numpy(), reference_median(x, k))


def test_median_program_sizes_and_chunk_bound():
    sizes = {k: (median_program(k).n_ops, median_program(k).n_slots) for k in (3, 7, 11)}
    assert sizes == {3: (22, 9), 7: (294, 46), 11: (842, 80)}
    with pytest.raises(ValueError, match="odd"):
        median_program(4)
    for k in (3, 7, 11):
        p = median_program(k)
        for n, budget in [(32, 1 << 30), (5, 32 << 20), (1, 2 << 20), (3, 100_000)]:
            images, rows = chunk_shape(p, n, 448, 448, budget)
            wp = 448 + k - 1
            used = 4 * (p.n_slots * images * rows * wp + images * (448 + k - 1) * wp)
            assert 1 <= images <= n and 1 <= rows <= 448
            assert used <= max(budget, 4 * wp * (p.n_slots + 448 + k - 1))


def test_device_rows_touch_only_the_samples_that_drew_them():
    x = torch.from_numpy(random_images((6, 30, 26), seed=1))[:, None]
    before = x.clone()
    params = torch.tensor([
        record(), record(3), record(7), record(11), record(0, (4, 5, 17, 18)), record(7, (0, 20, 13, 26)),
    ])
    out = apply_device_rows(x, params)
    assert torch.equal(x, before)  # the input is never modified
    assert torch.equal(out[0], x[0])
    for i, k in ((1, 3), (2, 7), (3, 11)):
        assert np.array_equal(out[i, 0].numpy(), reference_median(x[i, 0].numpy()[None], k)[0])
    hole = torch.zeros(30, 26, dtype=torch.bool)
    hole[4:17, 5:18] = True
    assert torch.all(out[4, 0][hole] == 0) and torch.equal(out[4, 0][~hole], x[4, 0][~hole])
    blurred = torch.from_numpy(reference_median(x[5, 0].numpy()[None], 7)[0])
    blurred[0:13, 20:26] = 0
    assert torch.equal(out[5, 0], blurred)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    first_two = x[:2]
    assert apply_device_rows(first_two, torch.tensor([record(), record()])) is first_two


def test_device_rows_ignore_autocast_and_check_shapes():
    x = torch.from_numpy(random_images((2, 20, 20), seed=3))[:, None]
    params = torch.tensor([record(11, (1, 2, 9, 10)), record(3)])
    plain = apply_device_rows(x, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = apply_device_rows(x, params)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, plain)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        apply_device_rows(x[:, 0], params)
    with pytest.raises(ValueError, match="params"):
        apply_device_rows(x, params[:, :3])


def square_case(size=64):
    mask = np.zeros((size, size), np.uint8)
    mask[12:40, 18:44] = 1
    return mask.astype(np.float32), mask


def split_and_reference(seeds, size=64, crop=48):
    """(host+device outputs, all-on-host outputs, records) for the same per-sample seeds."""
    rng = np.random.default_rng(5)
    image = np.clip(square_case(size)[0] * 0.7 + rng.random((size, size), dtype=np.float32) * 0.3, 0, 1)
    mask = square_case(size)[1]
    ref, split = build_train_transform(crop, size), build_train_transform(crop, size, device_rows=True)
    host, expected, records = [], [], []
    for s in seeds:
        seed_transform(ref, s)
        seed_transform(split, s)
        a, b = ref(image=image, mask=mask), split(image=image, mask=mask)
        assert np.array_equal(a["mask"], b["mask"])
        expected.append(a["image"])
        host.append(b["image"])
        records.append(b["device_params"])
    params = torch.from_numpy(np.stack(records))
    out = apply_device_rows(torch.from_numpy(np.stack(host))[:, None], params)
    return out[:, 0], torch.from_numpy(np.stack(expected)), params


def test_split_pipeline_equals_the_all_on_host_pipeline_bit_for_bit():
    out, expected, params = split_and_reference([derive_seed(7, 0, i) for i in range(96)])
    drawn = Counter((int(p[MEDIAN_KERNEL]), int(p[CUTOUT])) for p in params)
    assert {k for k, _ in drawn} == {0, 3, 7, 11} and {c for _, c in drawn} == {0, 1}  # every case ran
    assert torch.equal(out, expected)


def test_each_device_row_fires_about_half_the_time():
    t = build_train_transform(48, 64, device_rows=True)
    image, mask = np.full((64, 64), 0.5, np.float32), np.zeros((64, 64), np.uint8)
    records = []
    for i in range(400):
        seed_transform(t, derive_seed(1, 0, i))
        records.append(t(image=image, mask=mask)["device_params"])
    r = np.stack(records)
    assert r.dtype == np.int64 and r.shape == (400, N_PARAMS)
    assert 0.42 < r[:, MEDIAN].mean() < 0.58 and 0.42 < r[:, CUTOUT].mean() < 0.58
    for k in (3, 7, 11):
        assert 0.11 < np.mean(r[:, MEDIAN_KERNEL] == k) < 0.23
    assert set(r[r[:, MEDIAN] == 0, MEDIAN_KERNEL]) == {0}
    assert 0.17 < np.mean(r[:, MEDIAN] & r[:, CUTOUT]) < 0.33  # independent rows
    cut = r[r[:, CUTOUT] == 1]
    side = int(48 * np.sqrt(0.2))
    assert np.all(cut[:, CUTOUT_BOTTOM] - cut[:, CUTOUT_TOP] == side)
    assert np.all(cut[:, CUTOUT_RIGHT] - cut[:, CUTOUT_LEFT] == side)
    assert cut[:, CUTOUT_TOP].min() >= 0 and cut[:, CUTOUT_BOTTOM].max() <= 48
    assert len(set(map(tuple, cut[:, CUTOUT_TOP:CUTOUT_LEFT + 1]))) > 0.8 * len(cut)  # positions vary


def test_masks_stay_binary_and_aligned_through_the_device_rows():
    image, mask = square_case()
    images = torch.from_numpy(np.stack([image] * 4))[:, None]
    masks = images.clone()
    params = torch.tensor([record(3), record(7), record(11), record(0, (0, 0, 30, 30))])
    out, masks_out = prepare_batch((images, masks, params), "cpu")
    assert torch.equal(masks_out, masks) and set(masks_out.unique().tolist()) == {0.0, 1.0}
    rows, cols = np.nonzero(mask)
    corners = [(rows.min(), cols.min()), (rows.min(), cols.max()), (rows.max(), cols.min()), (rows.max(), cols.max())]
    for i, k in enumerate((3, 7, 11)):
        differ = np.argwhere((out[i, 0].numpy() > 0.5) != (mask > 0))
        # a median rounds the corners of the square and moves no edge
        assert all(min(max(abs(y - cy), abs(x - cx)) for cy, cx in corners) <= k // 2 for y, x in differ), k


def write_prepared(folder, n=7, size=40):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        image = (rng.random((size, size)) * 65535).astype(np.uint16)
        mask = np.zeros((size, size), np.uint8)
        mask[5 + i:20 + i, 8:25] = 255
        write_png(folder / f"images/{i}.png", image)
        write_png(folder / f"masks/{i}.png", mask)
        rows.append({"id": str(i), "image": f"images/{i}.png", "mask": f"masks/{i}.png"})
    return rows


def batches(dataset, workers, epoch=0):
    sampler = SeededSampler(SequentialSampler(range(len(dataset))), seed=11)
    sampler.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=workers,
                        worker_init_fn=worker_init if workers else None)
    return [tuple(t.clone() for t in b) for b in loader]


def test_batches_and_device_rows_identical_for_0_1_2_workers_and_after_resume(tmp_path):
    rows = write_prepared(tmp_path)
    ds = PreparedDataset(tmp_path, rows, build_train_transform(32, 40, device_rows=True), with_device_params=True)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # no OpenCV thread pool to inherit into forked workers
    try:
        runs = {w: batches(ds, w, epoch=2) for w in (0, 1, 2)}
    finally:
        cv2.setNumThreads(threads)
    for w in (1, 2):
        for a, b in zip(runs[0], runs[w], strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
            assert torch.equal(apply_device_rows(a[0], a[2]), apply_device_rows(b[0], b[2]))
    # resume: epoch 2 straight after epoch 1 equals epoch 2 on its own; other epochs differ
    batches(ds, 0, epoch=1)
    again = batches(ds, 0, epoch=2)
    assert all(torch.equal(x, y) for a, b in zip(runs[0], again) for x, y in zip(a, b))
    other = batches(ds, 0, epoch=3)
    assert not all(torch.equal(a[2], b[2]) for a, b in zip(runs[0], other))
    assert runs[0][0][2].shape == (3, N_PARAMS) and runs[0][0][2].dtype == torch.int64


def test_dataset_records_are_zero_without_device_rows_and_required_with_them(tmp_path):
    rows = write_prepared(tmp_path, n=2)
    image, mask, params = PreparedDataset(tmp_path, rows, build_eval_transform(), with_device_params=True)[0]
    assert image.shape == mask.shape == (1, 40, 40) and torch.equal(params, torch.zeros(N_PARAMS, dtype=torch.int64))
    assert len(PreparedDataset(tmp_path, rows, build_train_transform(32, 40))[(0, 5)]) == 2
    deferring = PreparedDataset(tmp_path, rows, build_train_transform(32, 40, device_rows=True))
    with pytest.raises(ValueError, match="with_device_params=True"):
        deferring[(0, 5)]


def test_default_worker_count_follows_the_cores():
    assert [default_num_workers(c) for c in (1, 2, 8, 16)] == [1, 1, 7, 15]
    assert default_num_workers() >= 1


def test_loader_options_pin_and_keep_workers_for_a_gpu_only():
    assert loader_options("cpu", 0) == {"num_workers": 0, "pin_memory": False}
    gpu = loader_options("cuda", 3)
    assert gpu == {"num_workers": 3, "pin_memory": True, "persistent_workers": True,
                   "prefetch_factor": 4, "worker_init_fn": worker_init}
    assert loader_options("cpu")["num_workers"] == default_num_workers()
