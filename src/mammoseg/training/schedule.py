"""The paper's training schedule as pure functions of the (1-based) epoch number.

- loss phase: epochs 1..epochs.combo use the combo loss, the next epochs.focal_tversky
  epochs Focal Tversky;
- learning rate: lr × lr_gamma^(number of milestones m with m < epoch), i.e. the rate
  drops *after* each milestone epoch (paper: 1e-4 for 1–40, 1e-5 for 41–50, 1e-6 for
  51–60, 1e-7 for 61–80) — what torch's MultiStepLR gives when stepped once per epoch;
- the encoder is frozen for epochs 1..freeze_encoder_epochs.

The training loop uses torch's optimiser and scheduler; these functions say what they
must produce, and the tests check the two agree at every epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mammoseg.config import ExperimentConfig
from mammoseg.training.losses import combo_loss, focal_tversky_loss


def phase_at_epoch(cfg: ExperimentConfig, epoch: int) -> str:
    """`combo` or `focal_tversky`: the loss in force in `epoch` (1-based)."""
    if not 1 <= epoch <= cfg.total_epochs:
        raise ValueError(f"epoch {epoch} outside 1..{cfg.total_epochs}")
    return "combo" if epoch <= cfg.epochs.combo else "focal_tversky"


def final_phase(cfg: ExperimentConfig) -> str:
    """The last phase that has epochs: the best checkpoint is chosen among its epochs."""
    return "focal_tversky" if cfg.epochs.focal_tversky > 0 else "combo"


def lr_at_epoch(cfg: ExperimentConfig, epoch: int) -> float:
    """Learning rate in force during `epoch` (1-based)."""
    drops = sum(1 for m in cfg.lr_milestones if m < epoch)
    return cfg.optimiser.lr * cfg.lr_gamma**drops


def unused_milestones(cfg: ExperimentConfig) -> str | None:
    """One line saying which `lr_milestones` never take effect (a drop comes *after* its epoch, so a
    milestone at or past the last epoch changes nothing), or None when every one does."""
    last = cfg.total_epochs
    late = [m for m in cfg.lr_milestones if m >= last]
    if not late:
        return None
    used = [m for m in cfg.lr_milestones if m < last]
    effect = (f"the learning rate decays only after epoch {', '.join(map(str, used))}" if used
              else "the learning rate never decays")
    return (f"lr_milestones {', '.join(map(str, late))} lie past the last epoch ({last}): {effect}; "
            "set lr_milestones=[...] to match the epochs")


def encoder_frozen_at(cfg: ExperimentConfig, epoch: int) -> bool:
    return epoch <= cfg.freeze_encoder_epochs


def loss_for_phase(cfg: ExperimentConfig, phase: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function of a phase, with the config's parameters bound."""
    lc = cfg.loss
    if phase == "combo":
        return lambda logits, target: combo_loss(logits, target, weight=lc.combo_weight, eps=lc.eps)
    if phase == "focal_tversky":
        return lambda logits, target: focal_tversky_loss(logits, target, alpha=lc.alpha, gamma=lc.gamma, eps=lc.eps)
    raise ValueError(f"unknown loss phase {phase!r}")


def build_optimiser(
    cfg: ExperimentConfig, params
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam (lr, weight decay) and MultiStepLR, to be stepped once at the end of every epoch.

    The fused Adam kernel is used where torch has one (CPU and CUDA, torch >= 2.4): the same
    update rule, several times faster than the per-tensor loop on CPU.
    """
    params = list(params)
    kwargs = {"lr": cfg.optimiser.lr, "weight_decay": cfg.optimiser.weight_decay}
    try:
        optimiser = torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        optimiser = torch.optim.Adam(params, foreach=True, **kwargs)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimiser, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma
    )
    return optimiser, scheduler
