"""Segmentation models of the paper: ResNet34 / ResNet22 encoders × U-Net / FPN decoders.

`build_model("resnet22", "unet")` returns a `SegmentationModel` with `.encoder`,
`.decoder`, `.in_channels`, `.model_spec`, `freeze_encoder()` and `unfreeze_encoder()`.
New encoders and decoders register themselves in `mammoseg.models.registry`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

# Importing these modules fills the registry.
from mammoseg.models import decoders as _decoders  # noqa: F401
from mammoseg.models import encoders as _encoders  # noqa: F401
from mammoseg.models.model import SegmentationModel
from mammoseg.models.registry import (
    DECODERS,
    ENCODERS,
    lookup,
    register_decoder,
    register_encoder,
)
from mammoseg.models.weights import load_encoder_weights

__all__ = [
    "DECODERS",
    "ENCODERS",
    "SegmentationModel",
    "build_model",
    "check_encoder_weights",
    "count_parameters",
    "display_name",
    "register_decoder",
    "register_encoder",
]


def build_model(
    encoder: str,
    decoder: str,
    encoder_weights: str | os.PathLike | None = None,
    in_channels: int | None = None,
    dropout: float = 0.2,
) -> SegmentationModel:
    """Build `encoder` + `decoder` (e.g. "resnet34", "unet"), optionally with pretrained encoder weights.

    `encoder_weights`: None (random init), "imagenet" (resnet34), "gmic:/path/sample_model_N.p"
    (resnet22), or a local checkpoint path (see `mammoseg.models.weights`).
    `in_channels` defaults to the encoder's own (3 for resnet34, 1 for resnet22).
    """
    encoder_cls = lookup(ENCODERS, "encoder", encoder)
    decoder_cls = lookup(DECODERS, "decoder", decoder)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    channels = int(in_channels) if in_channels is not None else encoder_cls.default_in_channels
    enc = encoder_cls(in_channels=channels)
    if encoder_weights is not None:
        load_encoder_weights(enc, encoder_weights)
    dec = decoder_cls(enc.out_channels, dropout=float(dropout))
    spec = {"encoder": encoder, "decoder": decoder, "in_channels": channels, "dropout": float(dropout)}
    return SegmentationModel(enc, dec, spec)


def check_encoder_weights(
    encoder: str, encoder_weights: str | os.PathLike | None, in_channels: int | None = None
) -> None:
    """Load `encoder_weights` into a throwaway `encoder`, so a missing, unreadable or mismatched weights
    file is refused (its error names the file and the reason) before a run writes anything.

    The global random state is left as it was: checking must not change what training draws.
    """
    if encoder_weights is None:
        return
    encoder_cls = lookup(ENCODERS, "encoder", encoder)
    channels = int(in_channels) if in_channels is not None else encoder_cls.default_in_channels
    with torch.random.fork_rng(devices=[]):
        load_encoder_weights(encoder_cls(in_channels=channels), encoder_weights)


def display_name(encoder: str, decoder: str) -> str:
    """How the paper names an encoder/decoder pair, e.g. `ResNet22-UNet`."""
    parts = []
    for table, name in ((ENCODERS, encoder), (DECODERS, decoder)):
        cls = table.get(name)
        parts.append(getattr(cls, "display_name", "") or name)
    return "-".join(parts)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `module` (all, or only those that require gradients)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
