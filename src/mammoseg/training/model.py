"""The network of one fold: built from the config (seeded), then wrapped for the device.

The plain `SegmentationModel` ("core") is what checkpoints store and what freezing acts on;
the wrapped network ("net": DDP and/or torch.compile around it) is what the training step
calls. DDP must be rebuilt whenever the set of trainable parameters changes, i.e. when the
encoder is frozen or unfrozen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from mammoseg.config import ExperimentConfig
from mammoseg.distributed import DistInfo
from mammoseg.models import SegmentationModel, build_model

log = logging.getLogger(__name__)


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


def uses_compile(cfg: ExperimentConfig, device: torch.device) -> bool:
    """`compile` from the config; unset, on CUDA only (on CPU inductor's C++ build costs more than it saves here)."""
    return cfg.compile if cfg.compile is not None else device.type == "cuda"


class CompiledWithFallback(torch.nn.Module):
    """`torch.compile(module)`, falling back to `module` itself, with one logged warning, if
    compilation fails (no C compiler or Triton, an unsupported op): a run never dies for speed.

    The module is registered as `_orig_mod`, as torch.compile's own wrapper does, so
    `checkpoint.unwrap_model` finds the plain model under it.
    """

    def __init__(self, module: torch.nn.Module, **compile_options: Any) -> None:
        super().__init__()
        self._orig_mod = module
        self._compiled: Callable[..., Any] | None = torch.compile(module, **compile_options)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:  # compilation errors surface at the first call
                log.warning("torch.compile failed (%s: %s); training continues without it", type(exc).__name__,
                            " ".join(str(exc).split())[:300])
                self._compiled = None
        return self._orig_mod(*args, **kwargs)


def wrap_model(core: torch.nn.Module, cfg: ExperimentConfig, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """`core` inside DistributedDataParallel (several processes) and torch.compile (`uses_compile`)."""
    net = core
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None)
    if uses_compile(cfg, device):
        net = CompiledWithFallback(net)
    return net


def set_encoder_frozen(core: SegmentationModel, frozen: bool) -> None:
    """Freeze (no gradients, BatchNorm statistics fixed) or unfreeze the encoder."""
    if frozen:
        core.freeze_encoder()
    else:
        core.unfreeze_encoder()
