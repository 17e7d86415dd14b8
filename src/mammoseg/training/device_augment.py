"""The last two Table 1 rows (median blur, then cutout), run on the training device.

Why: the exact float median is ~95 % of the data cost. The host (DataLoader workers) runs
every row up to the Gaussian blur and only *draws* the decisions of these two rows, from the
sample's seeded generator, into a small int64 record (`PARAM_FIELDS`); the default collate
stacks the records into (B, P). `apply_device_rows` then applies the rows to the batch on
its device, only to the samples that drew them: the median grouped by kernel and chunked
(`mammoseg.training.median_blur`), the cutout as one masked fill. A sample's augmentation still
depends only on (seed, epoch, index), and the result equals the all-on-host pipeline bit
for bit (both rows commute with the host's final clip to [0, 1]).

Precision: the rows run in float32 with autocast disabled. They use no matmul or
convolution (only min/max, padding, indexing and fills), so the TF32 switches cannot change
them; the median returns input values bit for bit.

Median per device (measured with benchmarks/median.py, see docs/augmentations.md): on the
CPU, OpenCV's float32 `medianBlur` for k <= 5 and the selection network for larger kernels,
run on one torch thread (its ~10^3 small ops per chunk each open a parallel region; on a
busy machine — DataLoader workers beside the step — two threads made it up to 40× slower);
elsewhere (CUDA) the selection network for every kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cv2
import numpy as np
import torch

from mammoseg.training.median_blur import median_filter

__all__ = [
    "DEVICE_PARAMS_KEY",
    "N_PARAMS",
    "PARAM_FIELDS",
    "apply_device_rows",
    "cutout",
    "median_blur",
    "no_device_rows",
    "prepare_batch",
]

#: Key of the record in the output of the host part of the split pipeline (mammoseg.training.augment).
DEVICE_PARAMS_KEY = "device_params"
#: Layout of a sample's device-row record: median fired (0/1) and its kernel (3/7/11; 0 when
#: not fired); cutout fired (0/1) and its hole, rows top..bottom-1 × columns left..right-1.
PARAM_FIELDS: tuple[str, ...] = (
    "median", "median_kernel", "cutout", "cutout_top", "cutout_left", "cutout_bottom", "cutout_right",
)
N_PARAMS = len(PARAM_FIELDS)
MEDIAN, MEDIAN_KERNEL, CUTOUT, CUTOUT_TOP, CUTOUT_LEFT, CUTOUT_BOTTOM, CUTOUT_RIGHT = range(N_PARAMS)
#: Scratch memory the median may use per call, by device type (bounds the chunk size).
SCRATCH_BYTES = {"cpu": 32 << 20, "cuda": 1 << 30}
_DEFAULT_SCRATCH = 256 << 20


def no_device_rows() -> np.ndarray:
    """The record of a sample that drew no device row (validation, all-on-host mode)."""
    return np.zeros(N_PARAMS, dtype=np.int64)


def _opencv_median(images: torch.Tensor, k: int) -> torch.Tensor:
    """OpenCV's float32 median (k <= 5 only; SIMD, the fastest exact CPU method there)."""
    out = torch.empty_like(images)
    for i, image in enumerate(images):
        out[i] = torch.from_numpy(cv2.medianBlur(np.ascontiguousarray(image.numpy()), k))
    return out


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def median_blur(images: torch.Tensor, k: int, scratch_bytes: int | None = None) -> torch.Tensor:
    """Exact k×k median with replicated borders of float32 images (N, H, W), on their device.

    Equal bit for bit to the host reference `mammoseg.training.augment.FloatMedianBlur`.
    `scratch_bytes` bounds the extra memory (default by device type, `SCRATCH_BYTES`).
    """
    if scratch_bytes is None:
        scratch_bytes = SCRATCH_BYTES.get(images.device.type, _DEFAULT_SCRATCH)
    if images.device.type != "cpu":
        return median_filter(images, k, scratch_bytes)
    if k <= 5:
        return _opencv_median(images.contiguous(), k)
    with _one_torch_thread():
        return median_filter(images, k, scratch_bytes)


def cutout(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Zero each sample's hole where its record says the cutout fired (images (B,1,H,W))."""
    fired = torch.nonzero(params[:, CUTOUT]).flatten()
    if fired.numel() == 0:
        return images
    height, width = images.shape[-2:]
    box = params[fired].to(images.device, non_blocking=True)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    in_rows = (rows >= box[:, CUTOUT_TOP, None]) & (rows < box[:, CUTOUT_BOTTOM, None])
    in_cols = (cols >= box[:, CUTOUT_LEFT, None]) & (cols < box[:, CUTOUT_RIGHT, None])
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    fired = fired.to(images.device)
    images[fired] = images[fired].masked_fill(hole, 0.0)
    return images


def _check(images: torch.Tensor, params: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"apply_device_rows: images must be (B, 1, H, W), got {tuple(images.shape)}")
    if params.shape != (images.shape[0], N_PARAMS):
        raise ValueError(f"apply_device_rows: params must be (B, {N_PARAMS}), got {tuple(params.shape)}")


def apply_device_rows(images: torch.Tensor, params: torch.Tensor, scratch_bytes: int | None = None) -> torch.Tensor:
    """Median blur, then cutout, then clip to [0, 1], on the samples whose records drew them.

    `images` (B, 1, H, W) float32 on any device; `params` (B, P) int64 records, best left
    on the CPU (reading them on a GPU would synchronise). Returns a new tensor, or `images`
    itself when no sample drew a device row; `images` is never modified.
    """
    _check(images, params)
    params = params.cpu()
    if not bool((params[:, MEDIAN] != 0).any() or (params[:, CUTOUT] != 0).any()):
        return images
    with torch.autocast(images.device.type, enabled=False):
        out = images.float().clone()
        kernels = params[:, MEDIAN_KERNEL] * (params[:, MEDIAN] != 0)
        for k in sorted({int(v) for v in kernels.unique() if int(v) > 0}):
            chosen = torch.nonzero(kernels == k).flatten().to(out.device)
            out[chosen] = median_blur(out[chosen, 0], k, scratch_bytes)[:, None]
        return cutout(out, params).clamp_(0.0, 1.0)


def prepare_batch(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device | str, non_blocking: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A DataLoader batch (images, masks, params) → (images, masks) on `device`, device rows applied."""
    images, masks, params = batch
    images = images.to(device, non_blocking=non_blocking)
    masks = masks.to(device, non_blocking=non_blocking)
    return apply_device_rows(images, params), masks
