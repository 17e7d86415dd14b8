"""The prepared folder as a torch Dataset, with reproducible per-sample augmentation.

Each item is `(image, mask)`: float32 tensors of shape (1, H, W), the image on the
[0, 1] scale (uint16 / 65535, so the 16-bit precision is kept) and the mask in {0, 1}.
With `with_device_params=True` it is `(image, mask, params)`: `params` is the int64 record
(`mammoseg.training.device_augment.PARAM_FIELDS`) of the Table 1 rows that run on the training
device (all zeros when the transform drew none, e.g. validation); the default collate
stacks them to (B, P) and `mammoseg.training.device_augment.prepare_batch` applies them.

Augmentation randomness does not come from a per-worker random state (which would
depend on the number of workers and on what ran before) but from a seed that travels
with the index: the sampler yields `(index, sample_seed)` pairs, and the transform's
random generators are reset from that seed before each sample. The same seed gives the
same augmented sample in any worker, in any order, after any resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from mammoseg.io import read_png
from mammoseg.seeding import derive_seed, seed_transform
from mammoseg.training.device_augment import DEVICE_PARAMS_KEY, no_device_rows

Transform = Callable[..., Mapping[str, Any]]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A prepared image: uint16 2-D PNG (errors name the file)."""
    image = read_png(path)
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D uint16 prepared image, got {image.dtype} {image.shape}")
    return image


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A prepared mask as uint8 {0, 1} (any non-zero pixel is foreground)."""
    mask = read_png(path)
    if mask.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D mask, got shape {mask.shape}")
    return (mask > 0).astype(np.uint8)


class PreparedDataset(Dataset):
    """Rows of a prepared folder's manifest → `(image (1,H,W) float32, mask (1,H,W) float32)`.

    `transform(image=float32 H×W in [0,1], mask=uint8 H×W {0,1})` returns the same kinds
    (albumentations 2 style); None keeps the prepared image unchanged (validation).
    `cache=True` reads every image once up front and keeps the uint16 arrays in memory
    (shared copy-on-write with forked DataLoader workers). `with_device_params=True` adds the
    device-row record as a third element (see the module docstring); without it a transform
    that defers rows to the device is refused, so they cannot be silently dropped.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        rows: Sequence[Mapping[str, str]],
        transform: Transform | None = None,
        cache: bool = False,
        progress: bool = False,
        with_device_params: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.with_device_params = with_device_params
        self.rows = [dict(r) for r in rows]
        self.ids = [r["id"] for r in self.rows]
        self.transform = transform
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            items = range(len(self.rows))
            if progress:
                items = tqdm(items, desc="caching images", unit="img", leave=False)
            self._cache = [self._read(i) for i in items]

    def __len__(self) -> int:
        return len(self.rows)

    def with_transform(self, transform: Transform | None) -> "PreparedDataset":
        """The same rows (and cache) with another transform."""
        other = object.__new__(PreparedDataset)
        other.__dict__.update(self.__dict__)
        other.transform = transform
        return other

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows[i]
        image_path, mask_path = self.data_dir / row["image"], self.data_dir / row["mask"]
        image, mask = read_image(image_path), read_mask(mask_path)
        if image.shape != mask.shape:
            raise ValueError(f"{mask_path}: mask shape {mask.shape} differs from image {image_path} {image.shape}")
        return image, mask

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Untransformed (float32 [0,1] image, uint8 {0,1} mask) of row `i`."""
        image, mask = self._cache[i] if self._cache is not None else self._read(i)
        return image.astype(np.float32) / np.float32(65535.0), mask

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        index, sample_seed = item if isinstance(item, tuple) else (item, None)
        image, mask = self.load(index)
        params = None
        if self.transform is not None:
            if sample_seed is not None:
                seed_transform(self.transform, sample_seed)
            out = self.transform(image=image, mask=mask)
            image, mask, params = out["image"], out["mask"], out.get(DEVICE_PARAMS_KEY)
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        if self.with_device_params:
            return image, mask, torch.from_numpy(no_device_rows() if params is None else params)
        if params is not None:
            raise ValueError("PreparedDataset: the transform defers rows to the training device; "
                             "build the dataset with with_device_params=True so they travel with the batch")
        return image, mask


class SeededSampler(Sampler):
    """Wraps an index sampler and attaches a per-sample augmentation seed to every index.

    The seed is `derive_seed(seed, epoch, index)`, so it depends only on the run's seed,
    the epoch (set with `set_epoch`) and the sample — not on workers or history.
    `set_epoch` is forwarded to the wrapped sampler (e.g. DistributedSampler shuffling).
    """

    def __init__(self, base: Sampler, seed: int) -> None:
        self.base = base
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.base:
            yield int(index), derive_seed(self.seed, self.epoch, int(index))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]


class ShardSampler(Sampler):
    """Indices `rank, rank + world, ...` in order, without padding (validation under DDP)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: one torch thread per worker (the workers are the parallelism).

    OpenCV's thread count is inherited from the parent, which `train` sets to 1 before it
    forks workers: changing it inside a forked child whose parent had a running OpenCV
    thread pool can deadlock the child.
    """
    torch.set_num_threads(1)


def default_num_workers(cores: int | None = None) -> int:
    """DataLoader workers when none are configured: one per available core, less one for the step.

    The cores are those this process may run on (its CPU affinity), not the machine's count.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def loader_options(device: torch.device | str, num_workers: int | None = None) -> dict[str, Any]:
    """DataLoader keyword arguments that keep a training device fed.

    Workers default to `default_num_workers()`; they persist across epochs, each keeps
    `prefetch_factor` batches ready, and batches land in pinned memory when the device is a
    GPU (so `.to(device, non_blocking=True)` overlaps the copy with compute).
    """
    device = torch.device(device)
    workers = default_num_workers() if num_workers is None else int(num_workers)
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=4 if device.type == "cuda" else 2,
                       worker_init_fn=worker_init)
    return options
