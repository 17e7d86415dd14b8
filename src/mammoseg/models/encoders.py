"""The paper's two encoders: ResNet34 (torchvision layout) and ResNet22 (GMIC's global network).

Each encoder returns five feature maps, shallow → deep, and declares their channel counts
(`out_channels`) so decoders can be built from them alone. Nominal strides: ResNet34
2, 4, 8, 16, 32; ResNet22 4, 8, 16, 32, 64 (docs/method.md).
"""

from __future__ import annotations

import torch
from torch import nn

from mammoseg.models.layers import init_weights
from mammoseg.models.registry import register_encoder


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class Encoder(nn.Module):
    """Base class: `forward(x)` returns a list of 5 features (shallow → deep)."""

    #: registry name, also used to pick the pretrained-weight layouts that apply
    name: str = ""
    #: how tables and figures name it (the paper's spelling)
    display_name: str = ""
    #: input channels when `build_model` is given none
    default_in_channels: int = 3
    out_channels: tuple[int, ...] = ()
    #: state-dict key of the first convolution, adapted when a checkpoint has other input channels
    input_conv_key: str = ""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"{type(self).__name__}: in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels


# --------------------------------------------------------------------------- ResNet34


class BasicBlock(nn.Module):
    """torchvision's post-activation basic block (names conv1/bn1/conv2/bn2/downsample)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@register_encoder("resnet34")
class ResNet34Encoder(Encoder):
    """ResNet34 without avgpool/fc; parameter names equal torchvision's so its checkpoint loads."""

    name = "resnet34"
    display_name = "ResNet34"
    default_in_channels = 3
    out_channels = (64, 64, 128, 256, 512)
    input_conv_key = "conv1.weight"
    blocks = (3, 4, 6, 3)

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (cout, n) in enumerate(zip((64, 128, 256, 512), self.blocks), start=1):
            stride = 1 if i == 1 else 2
            layer = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))
            cin = cout
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c1, c2, c3, c4, c5]


# --------------------------------------------------------------------------- ResNet22


class PreActBlock(nn.Module):
    """GMIC's pre-activation basic block: out = conv2(relu(bn2(conv1(a)))) + residual, a = relu(bn1(x)).

    The residual is `downsample(a)` (a bare 1×1 conv, no BN) when the block has one, else `x`;
    there is no ReLU after the addition.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.relu = nn.ReLU()
        self.downsample: nn.Conv2d | None = None
        if downsample:
            self.downsample = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
        elif stride != 1 or cin != cout:
            raise ValueError("a block that changes stride or channels needs a downsample")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        residual = x if self.downsample is None else self.downsample(a)
        out = self.conv2(self.relu(self.bn2(self.conv1(a))))
        return out + residual


@register_encoder("resnet22")
class ResNet22Encoder(Encoder):
    """GMIC's global network (ResNetV2, 1-channel, 2.8 M parameters).

    The stem pool has padding 0, so feature sizes are odd (512 → 256 → 127 → 64 → …);
    decoders therefore resize to each skip's actual size.
    """

    name = "resnet22"
    display_name = "ResNet22"
    default_in_channels = 1
    out_channels = (16, 32, 64, 128, 256)
    input_conv_key = "stem.weight"

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(in_channels)
        self.stem = nn.Conv2d(in_channels, 16, kernel_size=7, stride=2, padding=3, bias=False)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
        cin = 16
        for i, (cout, stride) in enumerate(zip(self.out_channels, (1, 2, 2, 2, 2)), start=1):
            layer = nn.Sequential(
                PreActBlock(cin, cout, stride, downsample=True), PreActBlock(cout, cout)
            )
            setattr(self, f"layer{i}", layer)
            cin = cout
        self.final_bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.pool(self.stem(x))
        c1 = self.layer1(h)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        c5 = self.relu(self.final_bn(self.layer5(c4)))
        return [c1, c2, c3, c4, c5]
