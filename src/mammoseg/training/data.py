"""The data of one fold: datasets, samplers, loaders, and the normalisation statistics.

The order of training samples comes from a DistributedSampler seeded per fold (reshuffled
per epoch by `set_epoch`), and every sample carries its own augmentation seed
(`SeededSampler`), so a fold's data depends only on the run seed, never on the number of
workers or processes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from mammoseg.config import ExperimentConfig
from mammoseg.distributed import DistInfo, all_reduce_sum
from mammoseg.manifest import is_cropped
from mammoseg.seeding import AUGMENT, ORDER, derive_seed
from mammoseg.training.augment import build_eval_transform, build_train_transform
from mammoseg.training.dataset import PreparedDataset, SeededSampler, ShardSampler, loader_options
from mammoseg.training.device_augment import prepare_batch

log = logging.getLogger(__name__)


def make_loader(
    dataset: PreparedDataset,
    sampler: Sampler | Sequence,
    batch_size: int,
    cfg: ExperimentConfig,
    device: torch.device,
    drop_last: bool = False,
    persistent: bool = True,
) -> DataLoader:
    """A DataLoader that keeps the device fed (`mammoseg.training.dataset.loader_options`: workers from the
    config or the cores available, persistent, prefetching, pinned memory on CUDA) with its own generator."""
    options = loader_options(device, cfg.num_workers)
    if options["num_workers"] > 0:
        # Forked workers inherit this process's OpenCV thread pool in a broken state; with
        # one OpenCV thread there is no pool to inherit (a fork taken while the pool runs,
        # e.g. after prepare or predict in the same process, can deadlock the worker).
        cv2.setNumThreads(1)
        options["persistent_workers"] = persistent
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        # Its own generator, so creating an iterator never draws from the global RNG.
        generator=torch.Generator().manual_seed(0),
        **options,
    )


def augmented_batch(batch: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on `device`: (images, masks), with the device augmentation rows applied when
    the batch carries their records (training) — validation batches are (images, masks) as they are."""
    if len(batch) == 3:
        return prepare_batch(tuple(batch), device)
    images, masks = batch
    return images.to(device, non_blocking=True), masks.to(device, non_blocking=True)


def prepared_image_size(rows: Sequence[Mapping[str, str]], data_dir: Path) -> int:
    """The one `size` the fold's prepared images share (an error names the manifest otherwise)."""
    sizes = {r.get("size", "") for r in rows}
    if len(sizes) != 1 or not next(iter(sizes)).strip().isdigit():
        raise ValueError(f"{data_dir / 'manifest.csv'}: the train images must share one integer `size`, found {sorted(sizes)}")
    return int(next(iter(sizes)))


@dataclass
class FoldData:
    """Everything the epoch loop reads from: loaders, the seeded sampler and the augmentation."""

    train_set: PreparedDataset
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: SeededSampler
    image_size: int
    train_transform: Callable[[], Callable]
    breast_crop: bool = False  # the prepared images were cut to the breast (predict must do the same)


def build_fold_data(
    cfg: ExperimentConfig,
    data_dir: Path,
    train_rows: Sequence[Mapping[str, str]],
    val_rows: Sequence[Mapping[str, str]],
    fold_seed: int,
    device: torch.device,
    info: DistInfo,
    progress: bool,
) -> FoldData:
    """Datasets and loaders of one fold (training shuffled and augmented, validation as is)."""
    if len(train_rows) < 2:
        raise ValueError(f"{data_dir / 'manifest.csv'}: a fold has only {len(train_rows)} training image(s); "
                         "batch norm needs at least 2: use fewer folds (n_folds=...) or more data")
    image_size = prepared_image_size(list(train_rows) + list(val_rows), data_dir)
    if cfg.crop_size > image_size:
        raise ValueError(f"config key 'crop_size': {cfg.crop_size} is larger than the prepared images ({image_size} px)")

    def train_transform() -> Callable:
        # The median blur and cutout rows run on the training device (`BatchPipeline`), batched.
        return build_train_transform(cfg.crop_size, image_size, geometric_only=cfg.augmentation == "geometric",
                                     device_rows=True)

    train_set = PreparedDataset(data_dir, train_rows, train_transform(), cache=cfg.cache_images,
                                progress=progress and info.is_main, with_device_params=True)
    val_set = PreparedDataset(data_dir, val_rows, build_eval_transform(), cache=cfg.cache_images)
    order = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                               seed=derive_seed(fold_seed, ORDER) % 2**31, drop_last=False)
    sampler = SeededSampler(order, seed=derive_seed(fold_seed, AUGMENT))
    # A last batch of one image cannot train BatchNorm at the deepest (1×1) resolution: drop it then.
    drop_last = len(sampler) > 1 and len(sampler) % cfg.batch_size == 1
    return FoldData(
        train_set=train_set,
        train_loader=make_loader(train_set, sampler, cfg.batch_size, cfg, device, drop_last=drop_last),
        val_loader=make_loader(val_set, ShardSampler(len(val_set), info.rank, info.world_size), cfg.batch_size, cfg, device),
        sampler=sampler,
        image_size=image_size,
        train_transform=train_transform,
        breast_crop=is_cropped(train_rows),
    )


def compute_norm_stats(
    dataset: PreparedDataset,
    n_samples: int,
    seed: int,
    cfg: ExperimentConfig,
    device: torch.device,
    info: DistInfo = DistInfo(),
    progress: bool = False,
) -> dict[str, float]:
    """Pixel-wise mean and SD of `n_samples` augmented samples (seeded; split over DDP ranks).

    Samples cycle through a seeded permutation of the dataset; sample j gets augmentation
    seed derive_seed(seed, 1, j), so the statistics do not depend on workers or world size
    (beyond float64 summation order). A constant dataset has SD 0: then SD 1 is used
    (normalisation only subtracts the mean) and a warning is logged.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("no training images to compute normalisation statistics on")
    perm = np.random.default_rng(derive_seed(seed, 0)).permutation(n)
    items = [(int(perm[j % n]), derive_seed(seed, 1, j)) for j in range(n_samples)]
    loader = make_loader(dataset, items[info.rank :: info.world_size], cfg.batch_size, cfg, device, persistent=False)
    total = total_sq = count = 0.0
    for batch in tqdm(loader, desc="normalisation stats", unit="batch", leave=False,
                      disable=not (progress and info.is_main)):
        images, _ = augmented_batch(batch, device)  # the training path, device rows included
        x = images.double()
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += float(x.numel())
    total, total_sq, count = all_reduce_sum([total, total_sq, count], device)
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    if std < 1e-6:
        log.warning("normalisation: the augmented training images have SD %.3g; using SD 1", std)
        std = 1.0
    return {"mean": float(mean), "std": float(std)}
