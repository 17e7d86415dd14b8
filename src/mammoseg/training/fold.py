"""One fold, read like torchvision's reference `main`: build data, build model, restore, then
per epoch `set_epoch → train_one_epoch → evaluate → save`.

Reproducibility: everything random derives from `config.seed` through `mammoseg.seeding`
— the model initialisation (per fold), the data order (seeded per fold and epoch), each
sample's augmentation, and dropout (the global generators are reseeded at the start of
every epoch) — so a fold continued from `last.pt` ends exactly where an uninterrupted run
would (on CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mammoseg.config import ExperimentConfig
from mammoseg.distributed import DistInfo, barrier
from mammoseg.layouts import FoldFiles
from mammoseg.models import SegmentationModel
from mammoseg.seeding import EPOCH, INIT, NORM, derive_seed, seed_everything
from mammoseg.training.data import FoldData, build_fold_data, compute_norm_stats
from mammoseg.training.engine import (
    BatchPipeline,
    LossFn,
    choose_precision,
    evaluate,
    train_one_epoch,
)
from mammoseg.training.model import (
    build_fold_model,
    set_encoder_frozen,
    uses_channels_last,
    wrap_model,
)
from mammoseg.training.schedule import (
    build_optimiser,
    encoder_frozen_at,
    final_phase,
    loss_for_phase,
    phase_at_epoch,
)
from mammoseg.training.state import (
    CheckpointProvenance,
    FoldState,
    Optimisation,
    TensorBoardLog,
    restore_fold,
    save_fold,
)

log = logging.getLogger(__name__)

EpochHook = Callable[[int, torch.nn.Module, torch.optim.Optimizer], None]


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    best_val_loss: float
    best_val_dice: float
    skipped: bool = False


@dataclass(frozen=True)
class FoldJob:
    """One fold to train and how: config, data folder, the fold's split and files, device,
    process and resume/progress flags. These travel unchanged from the fold driver down to the
    fold's setup, so they are passed as one value."""

    cfg: ExperimentConfig
    data_dir: Path
    train_rows: Sequence[Mapping[str, str]]
    val_rows: Sequence[Mapping[str, str]]
    files: FoldFiles
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: DistInfo = field(default_factory=DistInfo)
    resume: bool = False
    progress: bool = True


@dataclass
class FoldRun:
    """Everything built for one fold before its first epoch, and the epoch bookkeeping."""

    cfg: ExperimentConfig
    files: FoldFiles
    info: DistInfo
    fold_seed: int
    data: FoldData
    core: SegmentationModel
    opt: Optimisation
    state: FoldState
    pipeline: BatchPipeline
    tensorboard: TensorBoardLog
    net: torch.nn.Module | None = None
    frozen: bool | None = None

    def set_epoch(self, epoch: int) -> tuple[str, LossFn]:
        """Reseed, (un)freeze the encoder as the schedule says, reshuffle; the epoch's phase and loss."""
        seed_everything(derive_seed(self.fold_seed, EPOCH, epoch))
        frozen = encoder_frozen_at(self.cfg, epoch)
        if frozen != self.frozen:
            set_encoder_frozen(self.core, frozen)
            self.net = wrap_model(self.core, self.cfg, self.pipeline.device, self.info)  # DDP must see what trains
            self.frozen = frozen
        self.data.sampler.set_epoch(epoch)
        phase = phase_at_epoch(self.cfg, epoch)
        return phase, loss_for_phase(self.cfg, phase)

    def save(self, row: dict[str, Any], images: int) -> None:
        """Record an epoch: history, best epoch, files (main process), one log line."""
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(f"fold {self.files.fold} epoch {row['epoch']}: training loss is "
                                     f"{row['train_loss']}; lower optimiser.lr?")
        self.state.history.append(row)
        improved = row["phase"] == final_phase(self.cfg) and row["val_loss"] < self.state.best["val_loss"]
        if improved:
            self.state.best = {k: row[k] for k in ("epoch", "val_loss", "val_dice")}
        if self.info.is_main:
            provenance = CheckpointProvenance(self.cfg.to_dict(), self.data.image_size, self.info.world_size,
                                              self.data.breast_crop)
            save_fold(self.files, self.state, self.core, self.opt, provenance, improved,
                      row["epoch"] == self.cfg.total_epochs)
            self.tensorboard.add(row)
            log.info("fold %d epoch %d/%d [%s] lr %.1e  train %.4f  val %.4f  dice %.4f  %.1f s (%.1f img/s)%s",
                     self.files.fold, row["epoch"], self.cfg.total_epochs, row["phase"], row["lr"], row["train_loss"],
                     row["val_loss"], row["val_dice"], row["seconds"], images / max(row["seconds"], 1e-9),
                     "  *best" if improved else "")
        barrier()

    def result(self) -> FoldResult:
        best = self.state.best
        return FoldResult(self.files.fold, int(best["epoch"]), float(best["val_loss"]), float(best["val_dice"]))


def start_fold(job: FoldJob) -> FoldRun:
    """Build data and model, then restore `last.pt` (with `resume`) or compute the normalisation."""
    cfg, files, device, info, progress = job.cfg, job.files, job.device, job.info, job.progress
    fold_seed = derive_seed(cfg.seed, files.fold)
    data = build_fold_data(cfg, job.data_dir, job.train_rows, job.val_rows, fold_seed, device, info, progress)
    core = build_fold_model(cfg, derive_seed(fold_seed, INIT), device, info)
    optimiser, scheduler = build_optimiser(cfg, core.parameters())
    opt = Optimisation(optimiser, scheduler, choose_precision(cfg, device))
    state = restore_fold(files, core.model_spec, core, opt) if job.resume else None
    if job.resume and info.is_main:
        log.info("fold %d: %s", files.fold, f"resuming from {files.last} after epoch {state.next_epoch - 1}"
                 if state else f"no {files.last} to resume from; starting at epoch 1")
    if state is None:
        norm_set = data.train_set.with_transform(data.train_transform())
        norm = compute_norm_stats(norm_set, cfg.norm_samples, derive_seed(fold_seed, NORM), cfg, device, info, progress)
        if info.is_main:
            log.info("fold %d: normalisation mean %.5f SD %.5f (%d augmented samples)",
                     files.fold, norm["mean"], norm["std"], cfg.norm_samples)
        state = FoldState(norm=norm)
    pipeline = BatchPipeline(device, state.norm, core.in_channels, opt.precision, uses_channels_last(cfg, device))
    files.dir.mkdir(parents=True, exist_ok=True)
    return FoldRun(cfg, files, info, fold_seed, data, core, opt, state, pipeline,
                   TensorBoardLog(files, cfg.tensorboard and info.is_main))


def train_fold(
    job: FoldJob,
    stop_after_epoch: int | None = None,
    on_epoch_start: EpochHook | None = None,
    on_epoch_end: EpochHook | None = None,
) -> FoldResult:
    """Train one fold with the paper's schedule; writes best.pt, last.pt, log.csv, learning_curve.png.

    `job.resume` continues from `job.files.last` when it exists. `stop_after_epoch` ends this
    call after that epoch (as if interrupted; `last.pt` allows resuming). Hooks, on every
    rank, as hook(epoch, model, optimiser): `on_epoch_start` once the epoch's schedule is in
    force, `on_epoch_end` after its optimisation steps (before validation).
    """
    cfg = job.cfg
    run = start_fold(job)
    last = cfg.total_epochs if stop_after_epoch is None else min(cfg.total_epochs, stop_after_epoch)
    for epoch in range(run.state.next_epoch, last + 1):
        started = time.perf_counter()
        phase, loss_fn = run.set_epoch(epoch)
        lr = run.opt.optimiser.param_groups[0]["lr"]
        if on_epoch_start is not None:
            on_epoch_start(epoch, run.core, run.opt.optimiser)
        train_loss, images = train_one_epoch(
            run.net, run.data.train_loader, loss_fn, run.opt.optimiser, run.pipeline, job.info,
            desc=f"fold {job.files.fold} epoch {epoch}/{cfg.total_epochs} [{phase}]", progress=job.progress)
        if on_epoch_end is not None:
            on_epoch_end(epoch, run.core, run.opt.optimiser)
        run.opt.scheduler.step()
        val_loss, val_dice = evaluate(run.core, run.data.val_loader, loss_fn, run.pipeline)
        run.save({"epoch": epoch, "phase": phase, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
                  "val_dice": val_dice, "seconds": time.perf_counter() - started}, images)
    run.tensorboard.close()
    return run.result()
