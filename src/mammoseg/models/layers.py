"""Small building blocks shared by encoders and decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Sequential):
    """Conv2d 3×3 (padding 1) → BatchNorm2d → ReLU; the conv has no bias unless asked."""

    def __init__(self, cin: int, cout: int, bias: bool = False) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SegmentationHead(nn.Module):
    """Dropout2d → 1×1 conv to one logit map → bilinear resize to the input size."""

    def __init__(self, cin: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(p=dropout)
        self.conv = nn.Conv2d(cin, 1, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        x = self.conv(self.dropout(x))
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resize of `x` to `ref`'s spatial size (never a blind ×2: sizes can be odd)."""
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convs with zero bias; BatchNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
