"""The encoder–decoder segmentation model and its encoder freezing for the training schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mammoseg.models.encoders import Encoder


class SegmentationModel(nn.Module):
    """`encoder` → `decoder`; logits (B, 1, H, W) at the input size.

    `freeze_encoder()` implements the paper's frozen-encoder warm-up: encoder parameters
    stop receiving gradients and its BatchNorm layers keep their running statistics
    (eval mode), even when `train()` is called on the whole model.
    """

    def __init__(self, encoder: Encoder, decoder: nn.Module, model_spec: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.in_channels: int = encoder.in_channels
        #: what `build_model` needs to rebuild this model (`encoder, decoder, in_channels, dropout`)
        self.model_spec: dict[str, Any] = dict(model_spec)
        self._encoder_frozen = False

    @property
    def encoder_frozen(self) -> bool:
        return self._encoder_frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.in_channels):
            raise ValueError(
                f"model expects input (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self.decoder(self.encoder(x), x.shape[-2:])

    def freeze_encoder(self) -> None:
        """Stop training the encoder: no gradients, BatchNorm statistics fixed."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self._encoder_frozen = True
        self._set_encoder_bn_eval()

    def unfreeze_encoder(self) -> None:
        """Undo `freeze_encoder`; the encoder's BatchNorm follows the model's mode again."""
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        self._encoder_frozen = False
        self.encoder.train(self.training)

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self._encoder_frozen:
            self._set_encoder_bn_eval()
        return self

    def _set_encoder_bn_eval(self) -> None:
        for m in self.encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
