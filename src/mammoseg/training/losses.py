"""The paper's two training losses: BCE + soft Jaccard (phase 1) and soft Focal Tversky (phase 2).

Definitions follow the paper exactly (docs/method.md). With p = sigmoid(logit) and g ∈ {0, 1}, the
overlap terms are sums over the pixels of *one* image, and the loss is the mean of the
per-image values over the batch; BCE is the plain mean over every pixel of the batch,
computed from logits so that it stays finite for large |logit|.

Both losses are computed in float32 even when called under autocast (bf16/fp16
activations), because the sums over 512×512 pixels lose too much precision in half
types.

The ``eps`` term sits in both numerator and denominator. Its role is the empty-mask
case: for an image with no mass (Σg = 0) the Jaccard/Tversky index is
``eps / (Σp + eps)``, which is 1 (loss 0) when the prediction is empty too and falls
towards 0 as soon as the model predicts any foreground, so empty images still teach
the model to predict nothing — and no division by zero occurs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["combo_loss", "focal_tversky_loss", "soft_jaccard", "tversky_index"]


def _prepare(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and return (logits, target) as float32, shape (B, N) per image."""
    if logits.shape != target.shape:
        raise ValueError(f"loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    if logits.ndim < 2:
        raise ValueError(f"loss: expected a batch (B, 1, H, W), got shape {tuple(logits.shape)}")
    b = logits.shape[0]
    return logits.float().reshape(b, -1), target.float().reshape(b, -1)


def soft_jaccard(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image soft Jaccard index J = (Σpg + ε) / (Σp + Σg − Σpg + ε), shape (B,)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x, g = _prepare(logits, target)
        p = torch.sigmoid(x)
        inter = (p * g).sum(dim=1)
        union = p.sum(dim=1) + g.sum(dim=1) - inter
        return (inter + eps) / (union + eps)


def tversky_index(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.7, eps: float = 1e-6
) -> torch.Tensor:
    """Per-image Tversky index TI = (Σpg + ε) / (Σpg + α·Σ(1−p)g + (1−α)·Σp(1−g) + ε), shape (B,).

    α weighs false negatives, 1 − α false positives (α = 0.7 favours recall).
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x, g = _prepare(logits, target)
        p = torch.sigmoid(x)
        tp = (p * g).sum(dim=1)
        fn = ((1.0 - p) * g).sum(dim=1)
        fp = (p * (1.0 - g)).sum(dim=1)
        return (tp + eps) / (tp + alpha * fn + (1.0 - alpha) * fp + eps)


def combo_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: float = 0.5, eps: float = 1e-6
) -> torch.Tensor:
    """(1 − w)·BCE + w·(1 − mean soft Jaccard): the paper's loss for epochs 1–20.

    The paper writes ``(1−ω)·BCE − ω·J``; adding ω makes it non-negative with the same gradient.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"combo_loss: weight must be in [0, 1], got {weight}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x, g = _prepare(logits, target)
        bce = F.binary_cross_entropy_with_logits(x, g, reduction="mean")
        jaccard = soft_jaccard(logits, target, eps=eps).mean()
        return (1.0 - weight) * bce + weight * (1.0 - jaccard)


def focal_tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.7,
    gamma: float = 4.0 / 3.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Soft Focal Tversky loss, mean over images of (1 − TI)^(1/γ): the paper's loss after epoch 20.

    With γ = 4/3 the exponent is 0.75 < 1, which boosts the loss (and gradient) of images
    that are already fairly well segmented relative to plain 1 − TI.
    """
    if gamma <= 0:
        raise ValueError(f"focal_tversky_loss: gamma must be > 0, got {gamma}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        ti = tversky_index(logits, target, alpha=alpha, eps=eps)
        # clamp: rounding can push TI a hair above 1, and a negative base under a fractional
        # power is NaN; the tiny floor keeps the gradient of x^0.75 finite at a perfect fit.
        return torch.clamp(1.0 - ti, min=1e-12).pow(1.0 / gamma).mean()
