"""The paper's two decoders, U-Net and FPN, built only from the encoder's channels.

A decoder is called as `decoder(features, size)` with the encoder's 5 features
(shallow → deep) and the input's (H, W); it returns logits (B, 1, H, W). The output
head (dropout + 1×1 conv) belongs to the decoder, as in the parameter counts of docs/method.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mammoseg.models.layers import (
    ConvBlock,
    SegmentationHead,
    init_weights,
    resize_like,
)
from mammoseg.models.registry import register_decoder


def _check_features(name: str, channels: Sequence[int], need: int) -> None:
    if len(channels) != need:
        raise ValueError(f"{name} decoder needs {need} encoder features, got {len(channels)}")


class DecoderBlock(nn.Module):
    """Upsample (nearest) to the skip's size, concatenate the skip, then two conv blocks."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvBlock(cin + skip, cout)
        self.conv2 = ConvBlock(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([resize_like(x, skip), skip], dim=1)
        return self.conv2(self.conv1(x))


@register_decoder("unet")
class UNetDecoder(nn.Module):
    """U-Net with width w: center (maxpool 2×2 of c5) 8w, then d5..d1 = 8w, 8w, 2w, 2w, w."""

    display_name = "UNet"

    def __init__(
        self,
        encoder_channels: Sequence[int],
        dropout: float = 0.2,
        width: int = 32,
    ) -> None:
        super().__init__()
        _check_features("unet", encoder_channels, 5)
        c1, c2, c3, c4, c5 = encoder_channels
        w = width
        # ceil_mode keeps a 1×1 deepest feature (ResNet22 at 64 px) at 1×1 instead of 0×0.
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.center = nn.Sequential(ConvBlock(c5, 8 * w), ConvBlock(8 * w, 8 * w))
        self.d5 = DecoderBlock(8 * w, c5, 8 * w)
        self.d4 = DecoderBlock(8 * w, c4, 8 * w)
        self.d3 = DecoderBlock(8 * w, c3, 2 * w)
        self.d2 = DecoderBlock(2 * w, c2, 2 * w)
        self.d1 = DecoderBlock(2 * w, c1, w)
        self.head = SegmentationHead(w, dropout)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
        c1, c2, c3, c4, c5 = features
        x = self.center(self.pool(c5))
        x = self.d5(x, c5)
        x = self.d4(x, c4)
        x = self.d3(x, c3)
        x = self.d2(x, c2)
        x = self.d1(x, c1)
        return self.head(x, size)


@register_decoder("fpn")
class FPNDecoder(nn.Module):
    """Feature pyramid on c2..c5 (c1 unused), per-level segmentation branches, concat, head."""

    display_name = "FPN"

    def __init__(
        self,
        encoder_channels: Sequence[int],
        dropout: float = 0.2,
        pyramid: int = 256,
        segmentation: int = 128,
    ) -> None:
        super().__init__()
        _check_features("fpn", encoder_channels, 5)
        _, c2, c3, c4, c5 = encoder_channels
        self.lateral5 = nn.Conv2d(c5, pyramid, kernel_size=1)
        self.lateral4 = nn.Conv2d(c4, pyramid, kernel_size=1)
        self.lateral3 = nn.Conv2d(c3, pyramid, kernel_size=1)
        self.lateral2 = nn.Conv2d(c2, pyramid, kernel_size=1)
        # Branch depths for p5, p4, p3, p2: 3, 2, 1, 1 conv blocks.
        self.branches = nn.ModuleList(
            nn.Sequential(
                ConvBlock(pyramid, segmentation),
                *[ConvBlock(segmentation, segmentation) for _ in range(depth - 1)],
            )
            for depth in (3, 2, 1, 1)
        )
        self.assemble = ConvBlock(4 * segmentation, segmentation, bias=True)
        self.head = SegmentationHead(segmentation, dropout)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
        _, c2, c3, c4, c5 = features
        p5 = self.lateral5(c5)
        p4 = resize_like(p5, c4) + self.lateral4(c4)
        p3 = resize_like(p4, c3) + self.lateral3(c3)
        p2 = resize_like(p3, c2) + self.lateral2(c2)
        levels = [branch(p) for branch, p in zip(self.branches, (p5, p4, p3, p2))]
        x = torch.cat([resize_like(level, p2) for level in levels], dim=1)
        return self.head(self.assemble(x), size)
