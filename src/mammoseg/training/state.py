"""What one fold keeps between epochs, and what it writes after each: checkpoints, log, curve.

`last.pt` holds everything a continued fold needs — model, optimiser, scheduler, scaler,
the global generators, normalisation, history and best epoch — so a fold resumed from it
ends exactly where an uninterrupted one would (on CPU; CUDA kernels are not bit-deterministic).
`best.pt` is the checkpoint of the best validation loss among the final loss phase's epochs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mammoseg.checkpoint import read_checkpoint, save_checkpoint, unwrap_model
from mammoseg.io import write_csv_atomic
from mammoseg.layouts import FoldFiles
from mammoseg.plots import plot_learning_curves
from mammoseg.seeding import rng_state, set_rng_state
from mammoseg.training.engine import Precision

log = logging.getLogger(__name__)

LOG_COLUMNS: tuple[str, ...] = ("epoch", "phase", "lr", "train_loss", "val_loss", "val_dice", "seconds")


@dataclass
class FoldState:
    """A fold's progress: normalisation, per-epoch history, the best epoch so far."""

    norm: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "val_loss": math.inf, "val_dice": math.nan})

    @property
    def next_epoch(self) -> int:
        return int(self.history[-1]["epoch"]) + 1 if self.history else 1


@dataclass
class Optimisation:
    """The optimiser, its LR schedule and the precision (grad scaler) of a fold."""

    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision


def fold_finished(files: FoldFiles, total_epochs: int) -> bool:
    """A fold is finished when best.pt exists and last.pt says all epochs ran."""
    if not (files.last.is_file() and files.best.is_file()):
        return False
    try:
        ckpt = read_checkpoint(files.last)
    except ValueError:
        return False
    return bool(ckpt.get("finished")) and int(ckpt["epoch"]) == total_epochs


def restore_fold(files: FoldFiles, spec: Mapping[str, Any], core: torch.nn.Module, opt: Optimisation) -> FoldState | None:
    """Load `last.pt` into the model, optimiser, scheduler, scaler and global generators; None if absent."""
    if not files.last.is_file():
        return None
    ckpt = read_checkpoint(files.last, map_location="cpu")
    if ckpt.get("fold") != files.fold or ckpt.get("model_spec") != dict(spec):
        raise ValueError(f"{files.last}: belongs to fold {ckpt.get('fold')} / model {ckpt.get('model_spec')}, "
                         f"not fold {files.fold} / {dict(spec)}")
    unwrap_model(core).load_state_dict(ckpt["model"], strict=True)
    opt.optimiser.load_state_dict(ckpt["optimiser"])
    opt.scheduler.load_state_dict(ckpt["scheduler"])
    if opt.precision.scaler is not None and ckpt.get("scaler"):
        opt.precision.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return FoldState(norm=dict(ckpt["norm"]), history=[dict(h) for h in ckpt["history"]], best=dict(ckpt["best"]))


@dataclass(frozen=True)
class CheckpointProvenance:
    """How a fold's checkpoints were made (config, image size, world size, whether the prepared
    images were cut to the breast): the same for every epoch's checkpoint, so they travel to
    `save_fold` as one value."""

    config: Mapping[str, Any]
    image_size: int
    world_size: int
    breast_crop: bool = False


def save_fold(
    files: FoldFiles,
    state: FoldState,
    core: torch.nn.Module,
    opt: Optimisation,
    provenance: CheckpointProvenance,
    improved: bool,
    finished: bool,
) -> None:
    """After an epoch: best.pt (if improved), last.pt, log.csv and the learning curve."""
    spec = unwrap_model(core).model_spec
    row = state.history[-1]
    common = dict(image_size=provenance.image_size, fold=files.fold, epoch=row["epoch"], val_loss=row["val_loss"],
                  val_dice=row["val_dice"], breast_crop=provenance.breast_crop)
    if improved:
        save_checkpoint(files.best, core, spec, state.norm, provenance.config, **common)
    save_checkpoint(
        files.last, core, spec, state.norm, provenance.config, **common,
        optimiser=opt.optimiser.state_dict(), scheduler=opt.scheduler.state_dict(),
        scaler=opt.precision.scaler.state_dict() if opt.precision.scaler is not None else None,
        rng=rng_state(), history=state.history, best=state.best, finished=finished, world_size=provenance.world_size,
    )
    write_log(files, state.history)
    plot_learning_curves(files.curve, [(files.dir.name, state.history)],
                         f"fold {files.fold}: {spec['encoder']}-{spec['decoder']}")


def write_log(files: FoldFiles, history: Sequence[Mapping[str, Any]]) -> None:
    rows = [{
        "epoch": h["epoch"], "phase": h["phase"], "lr": f"{h['lr']:.6g}",
        "train_loss": f"{h['train_loss']:.6f}", "val_loss": f"{h['val_loss']:.6f}",
        "val_dice": f"{h['val_dice']:.6f}", "seconds": f"{h['seconds']:.2f}",
    } for h in history]
    write_csv_atomic(files.log, rows, LOG_COLUMNS)


class TensorBoardLog:
    """Scalars of each epoch to `fold{k}/tensorboard` when asked for (optional extra)."""

    def __init__(self, files: FoldFiles, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import (
                SummaryWriter,  # optional extra: mammoseg[tensorboard]
            )
        except ImportError:
            log.warning("tensorboard is not installed (pip install 'mammoseg[tensorboard]'); not logging to it")
            return
        self.writer = SummaryWriter(log_dir=str(files.tensorboard))

    def add(self, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for key in ("train_loss", "val_loss", "val_dice", "lr"):
            self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
