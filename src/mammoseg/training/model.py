"""The network of one fold: built from the config (seeded), then wrapped for the device.

The plain `SegmentationModel` ("core") is what checkpoints store and what freezing acts on;
the wrapped network ("net": DDP and/or torch.compile around it) is what the training step
calls. DDP must be rebuilt whenever the set of trainable parameters changes, i.e. when the
encoder is frozen or unfrozen.
"""

from __future__ import annotations

import torch

from mammoseg.config import ExperimentConfig
from mammoseg.distributed import DistInfo
from mammoseg.models import SegmentationModel, build_model


def build_fold_model(cfg: ExperimentConfig, seed: int, device: torch.device, info: DistInfo) -> SegmentationModel:
    """The config's model, initialised from `seed`, on `device` (SyncBatchNorm under DDP if asked)."""
    torch.manual_seed(seed)
    m = cfg.model
    core = build_model(m.encoder, m.decoder, encoder_weights=m.encoder_weights,
                       in_channels=m.in_channels, dropout=m.dropout)
    if info.enabled and cfg.sync_batchnorm:
        core = torch.nn.SyncBatchNorm.convert_sync_batchnorm(core)
    core.to(device)
    if uses_channels_last(cfg, device):
        core.to(memory_format=torch.channels_last)
    return core


def uses_channels_last(cfg: ExperimentConfig, device: torch.device) -> bool:
    """channels_last pays off on CUDA tensor cores only."""
    return cfg.channels_last and device.type == "cuda"


def wrap_model(core: torch.nn.Module, cfg: ExperimentConfig, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """`core` inside DistributedDataParallel (several processes) and torch.compile (if configured)."""
    net = core
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def set_encoder_frozen(core: SegmentationModel, frozen: bool) -> None:
    """Freeze (no gradients, BatchNorm statistics fixed) or unfreeze the encoder."""
    if frozen:
        core.freeze_encoder()
    else:
        core.unfreeze_encoder()
