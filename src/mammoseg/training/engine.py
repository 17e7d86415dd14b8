"""One epoch of training and one pass of validation, and what they share.

`BatchPipeline` says how a loader batch becomes model input on the device (transfer,
normalisation, grey → 3 channels, memory format, autocast); `train_one_epoch` and `evaluate`
run it over a loader. Losses and Dice are reduced over DDP processes, so every rank returns
the same numbers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mammoseg.checkpoint import normalise_batch
from mammoseg.config import ExperimentConfig
from mammoseg.distributed import DistInfo, all_reduce_sum
from mammoseg.training.data import augmented_batch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Precision:
    """Autocast dtype (None = float32) and the fp16 grad scaler, if any."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def choose_precision(cfg: ExperimentConfig, device: torch.device) -> Precision:
    """CUDA + amp: bf16 where supported, else fp16 with a GradScaler. CPU: float32 unless cpu_bf16."""
    if device.type == "cuda" and cfg.amp:
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, None)
        return Precision(torch.float16, torch.amp.GradScaler("cuda"))
    if device.type == "cpu" and cfg.cpu_bf16:
        return Precision(torch.bfloat16, None)
    return Precision(None, None)


@dataclass
class BatchPipeline:
    """Loader batch → model input: to the device, normalised with the fold's statistics."""

    device: torch.device
    norm: Mapping[str, float]
    in_channels: int
    precision: Precision
    channels_last: bool = False

    def to_device(self, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(model input, masks) on the device: device augmentation rows, then normalisation."""
        images, masks = augmented_batch(batch, self.device)
        x = normalise_batch(images, self.norm, self.in_channels)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, masks

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast(self.device)


def optimisation_step(
    net: torch.nn.Module,
    x: torch.Tensor,
    masks: torch.Tensor,
    loss_fn: LossFn,
    optimiser: torch.optim.Optimizer,
    pipeline: BatchPipeline,
) -> torch.Tensor:
    """One forward + backward + optimiser step on model input `x`; returns the loss."""
    with pipeline.autocast():
        logits = net(x)
    loss = loss_fn(logits, masks)
    optimiser.zero_grad(set_to_none=True)
    scaler = pipeline.precision.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
    else:
        loss.backward()
        optimiser.step()
    return loss


def train_one_epoch(
    net: torch.nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    optimiser: torch.optim.Optimizer,
    pipeline: BatchPipeline,
    info: DistInfo = DistInfo(),
    desc: str = "train",
    progress: bool = False,
) -> tuple[float, int]:
    """Train on every batch of `loader`: (mean loss per image, images seen), over all processes."""
    net.train()
    loss_sum, n_seen = 0.0, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not (progress and info.is_main))
    started = time.perf_counter()
    for batch in bar:
        x, masks = pipeline.to_device(batch)
        loss = optimisation_step(net, x, masks, loss_fn, optimiser, pipeline)
        loss_sum += float(loss.detach()) * x.shape[0]
        n_seen += x.shape[0]
        rate = n_seen * info.world_size / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{loss_sum / n_seen:.4f}", img_s=f"{rate:.1f}")
    bar.close()
    total, count = all_reduce_sum([loss_sum, float(n_seen)], pipeline.device)
    return total / max(count, 1.0), int(count)


def dice_per_image(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image Dice of `sigmoid(logits) >= threshold` vs target; both empty → 1. Shape (B,)."""
    pred = (torch.sigmoid(logits.float()) >= threshold).flatten(1)
    ref = (target > 0.5).flatten(1)
    inter = (pred & ref).sum(1).double()
    total = pred.sum(1).double() + ref.sum(1).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, loss_fn: LossFn, pipeline: BatchPipeline) -> tuple[float, float]:
    """(mean validation loss per image, mean per-image Dice at 0.5), reduced over DDP processes."""
    model.eval()
    loss_sum = dice_sum = n = 0.0
    for batch in loader:
        x, masks = pipeline.to_device(batch)
        with pipeline.autocast():
            logits = model(x)
        loss_sum += float(loss_fn(logits, masks)) * x.shape[0]
        dice_sum += float(dice_per_image(logits, masks).sum())
        n += x.shape[0]
    loss_sum, dice_sum, n = all_reduce_sum([loss_sum, dice_sum, n], pipeline.device)
    if n == 0:
        return float("nan"), float("nan")
    return loss_sum / n, dice_sum / n
