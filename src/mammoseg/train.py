"""Training: one fold's loop with the paper's schedule, and the cross-validation driver.

`run_cross_validation(config, data_dir, run_dir)` writes the run folder
(docs/architecture.md): `config.yaml`, `folds.csv`, and per fold `best.pt`, `last.pt`,
`log.csv` and `learning_curve.png`. See docs/training.md for the protocol.

Reproducibility: everything random derives from `config.seed` — the folds, the model
initialisation (per fold), the data order (a DistributedSampler seeded per fold and
epoch), the augmentation (per-sample seeds, see `mammoseg.dataset`) and dropout (the
global generators are reseeded at the start of every epoch). So a fold continued from
`last.pt` ends exactly where an uninterrupted run would (on CPU; CUDA kernels are not
bit-deterministic).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from mammoseg.checkpoint import normalise_batch, read_checkpoint, save_checkpoint, unwrap_model
from mammoseg.config import RUNTIME_KEYS, ExperimentConfig, config_differences, config_from_dict, save_config
from mammoseg.dataset import PreparedDataset, SeededSampler, ShardSampler, derive_seed, worker_init
from mammoseg.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    env_dist_info,
    init_distributed,
    resolve_device,
)
from mammoseg.io import read_csv, write_csv_atomic
from mammoseg.manifest import load_manifest
from mammoseg.schedule import (
    build_optimiser,
    encoder_frozen_at,
    final_phase,
    loss_for_phase,
    phase_at_epoch,
)

log = logging.getLogger(__name__)

LOG_COLUMNS: tuple[str, ...] = ("epoch", "phase", "lr", "train_loss", "val_loss", "val_dice", "seconds")

# Tags that keep the seeds of different uses of the one run seed apart.
_INIT, _ORDER, _AUGMENT, _EPOCH, _NORM = 1, 2, 3, 4, 5

EpochHook = Callable[[int, torch.nn.Module, torch.optim.Optimizer], None]


# ----------------------------------------------------------------------------------------
# small helpers


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Global generator states, in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # a different number of GPUs on resume
            torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Precision:
    """Autocast dtype (None = float32) and the fp16 grad scaler, if any."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def choose_precision(cfg: ExperimentConfig, device: torch.device) -> Precision:
    """CUDA + amp: bf16 where supported, else fp16 with a GradScaler. CPU: float32 unless cpu_bf16."""
    if device.type == "cuda" and cfg.amp:
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, None)
        return Precision(torch.float16, torch.amp.GradScaler("cuda"))
    if device.type == "cpu" and cfg.cpu_bf16:
        return Precision(torch.bfloat16, None)
    return Precision(None, None)


def dice_per_image(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image Dice of `sigmoid(logits) >= threshold` vs target; both empty → 1. Shape (B,)."""
    pred = (torch.sigmoid(logits.float()) >= threshold).flatten(1)
    ref = (target > 0.5).flatten(1)
    inter = (pred & ref).sum(1).double()
    total = pred.sum(1).double() + ref.sum(1).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def write_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    rows = []
    for h in history:
        rows.append({
            "epoch": h["epoch"], "phase": h["phase"], "lr": f"{h['lr']:.6g}",
            "train_loss": f"{h['train_loss']:.6f}", "val_loss": f"{h['val_loss']:.6f}",
            "val_dice": f"{h['val_dice']:.6f}", "seconds": f"{h['seconds']:.2f}",
        })
    write_csv_atomic(path, rows, LOG_COLUMNS)


def plot_learning_curve(path: Path, history: Sequence[Mapping[str, Any]], title: str, combo_epochs: int) -> None:
    """Train/val loss and val Dice per epoch, with the loss-phase change marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mammoseg.io import atomic_path

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", ms=3, label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", ms=3, label="validation loss")
    ax2.plot(epochs, [h["val_dice"] for h in history], "o-", ms=3, color="C2", label="validation Dice")
    for ax in (ax1, ax2):
        if 0 < combo_epochs < (epochs[-1] if epochs else 0):
            ax.axvline(combo_epochs + 0.5, color="grey", ls="--", lw=1, label="combo → Focal Tversky")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("loss")
    ax2.set_ylabel("Dice (threshold 0.5)")
    ax2.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# data


def _loader(dataset, sampler, batch_size: int, cfg: ExperimentConfig, device: torch.device,
            drop_last: bool = False, persistent: bool = True) -> DataLoader:
    workers = cfg.num_workers
    if workers > 0:
        # Forked workers inherit this process's OpenCV thread pool in a broken state; with
        # one OpenCV thread there is no pool to inherit (a fork taken while the pool runs,
        # e.g. after prepare or predict in the same process, can deadlock the worker).
        cv2.setNumThreads(1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=persistent and workers > 0,
        worker_init_fn=worker_init if workers > 0 else None,
        # Its own generator, so creating an iterator never draws from the global RNG.
        generator=torch.Generator().manual_seed(0),
    )


def compute_norm_stats(
    dataset: PreparedDataset,
    n_samples: int,
    seed: int,
    cfg: ExperimentConfig,
    device: torch.device,
    info: DistInfo = DistInfo(),
    progress: bool = False,
) -> dict[str, float]:
    """Pixel-wise mean and SD of `n_samples` augmented samples (seeded; split over DDP ranks).

    Samples cycle through a seeded permutation of the dataset; sample j gets augmentation
    seed derive_seed(seed, j), so the statistics do not depend on workers or world size
    (beyond float64 summation order). A constant dataset has SD 0: then SD 1 is used
    (normalisation only subtracts the mean) and a warning is logged.
    """
    from tqdm import tqdm

    n = len(dataset)
    if n == 0:
        raise ValueError("no training images to compute normalisation statistics on")
    perm = np.random.default_rng(derive_seed(seed, 0)).permutation(n)
    items = [(int(perm[j % n]), derive_seed(seed, 1, j)) for j in range(n_samples)]
    mine = items[info.rank :: info.world_size]
    loader = _loader(dataset, mine, cfg.batch_size, cfg, device, persistent=False)
    total = total_sq = count = 0.0
    bar = tqdm(loader, desc="normalisation stats", unit="batch", leave=False, disable=not (progress and info.is_main))
    for images, _ in bar:
        x = images.double()
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += float(x.numel())
    total, total_sq, count = all_reduce_sum([total, total_sq, count], device)
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    std = math.sqrt(var)
    if std < 1e-6:
        log.warning("normalisation: the augmented training images have SD %.3g; using SD 1", std)
        std = 1.0
    return {"mean": float(mean), "std": float(std)}


# ----------------------------------------------------------------------------------------
# one fold


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    best_val_loss: float
    best_val_dice: float
    skipped: bool = False


def _image_size(rows: Sequence[Mapping[str, str]], data_dir: Path) -> int:
    sizes = {r.get("size", "") for r in rows}
    if len(sizes) != 1 or not next(iter(sizes)).strip().isdigit():
        raise ValueError(f"{data_dir / 'manifest.csv'}: the train images must share one integer `size`, found {sorted(sizes)}")
    return int(next(iter(sizes)))


def _build_core_model(cfg: ExperimentConfig, seed: int) -> torch.nn.Module:
    from mammoseg.models import build_model

    torch.manual_seed(seed)
    m = cfg.model
    return build_model(m.encoder, m.decoder, encoder_weights=m.encoder_weights,
                       in_channels=m.in_channels, dropout=m.dropout)


def fold_finished(fold_dir: Path, total_epochs: int) -> bool:
    """A fold is finished when best.pt exists and last.pt says all epochs ran."""
    last, best = fold_dir / "last.pt", fold_dir / "best.pt"
    if not (last.is_file() and best.is_file()):
        return False
    try:
        ckpt = read_checkpoint(last)
    except ValueError:
        return False
    return bool(ckpt.get("finished")) and int(ckpt["epoch"]) == total_epochs


def train_fold(
    cfg: ExperimentConfig,
    data_dir: str | os.PathLike,
    train_rows: Sequence[Mapping[str, str]],
    val_rows: Sequence[Mapping[str, str]],
    fold_dir: str | os.PathLike,
    fold: int,
    device: torch.device | str = "cpu",
    info: DistInfo = DistInfo(),
    resume: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    on_epoch_start: EpochHook | None = None,
    on_epoch_end: EpochHook | None = None,
) -> FoldResult:
    """Train one fold with the paper's schedule; writes best.pt, last.pt, log.csv, learning_curve.png.

    `resume` continues from `fold_dir/last.pt` when it exists. `stop_after_epoch` ends this
    call after that epoch (as if interrupted; `last.pt` allows resuming). `on_epoch_start`
    is called as hook(epoch, model, optimiser) after the epoch's schedule is applied,
    `on_epoch_end` after its optimisation steps (before validation); both on every rank.
    """
    from tqdm import tqdm

    from mammoseg.augment import build_eval_transform, build_train_transform

    data_dir, fold_dir = Path(data_dir), Path(fold_dir)
    device = torch.device(device)
    main = info.is_main
    total_epochs = cfg.total_epochs
    image_size = _image_size(list(train_rows) + list(val_rows), data_dir)
    if cfg.crop_size > image_size:
        raise ValueError(f"config key 'crop_size': {cfg.crop_size} is larger than the prepared images ({image_size} px)")
    fold_seed = derive_seed(cfg.seed, fold)
    config_dict = cfg.to_dict()

    # ---- data
    def train_transform():
        return build_train_transform(cfg.crop_size, image_size, geometric_only=cfg.augmentation == "geometric")

    train_ds = PreparedDataset(data_dir, train_rows, train_transform(),
                               cache=cfg.cache_images, progress=progress and main)
    val_ds = PreparedDataset(data_dir, val_rows, build_eval_transform(), cache=cfg.cache_images)
    order = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                               seed=derive_seed(fold_seed, _ORDER) % 2**31, drop_last=False)
    sampler = SeededSampler(order, seed=derive_seed(fold_seed, _AUGMENT))
    # A last batch of one image cannot train BatchNorm at the deepest (1×1) resolution: drop it then.
    drop_last = len(sampler) > 1 and len(sampler) % cfg.batch_size == 1
    train_loader = _loader(train_ds, sampler, cfg.batch_size, cfg, device, drop_last=drop_last)
    val_loader = _loader(val_ds, ShardSampler(len(val_ds), info.rank, info.world_size), cfg.batch_size, cfg, device)

    # ---- model, optimiser, state
    core = _build_core_model(cfg, derive_seed(fold_seed, _INIT))
    spec = dict(core.model_spec)
    if info.enabled and cfg.sync_batchnorm:
        core = torch.nn.SyncBatchNorm.convert_sync_batchnorm(core)
    core.to(device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        core.to(memory_format=torch.channels_last)
    optimiser, scheduler = build_optimiser(cfg, core.parameters())
    precision = choose_precision(cfg, device)

    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val_loss": math.inf, "val_dice": float("nan")}
    start_epoch = 1
    norm: dict[str, float] | None = None
    last_path = fold_dir / "last.pt"
    if resume and last_path.is_file():
        ckpt = read_checkpoint(last_path, map_location="cpu")
        if ckpt.get("fold") != fold or ckpt.get("model_spec") != spec:
            raise ValueError(f"{last_path}: belongs to fold {ckpt.get('fold')} / model {ckpt.get('model_spec')}, not fold {fold} / {spec}")
        unwrap_model(core).load_state_dict(ckpt["model"], strict=True)
        optimiser.load_state_dict(ckpt["optimiser"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if precision.scaler is not None and ckpt.get("scaler"):
            precision.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        norm = dict(ckpt["norm"])
        history = [dict(h) for h in ckpt["history"]]
        best = dict(ckpt["best"])
        start_epoch = int(ckpt["epoch"]) + 1
        if main:
            log.info("fold %d: resuming from %s after epoch %d", fold, last_path, start_epoch - 1)
    elif resume and main:
        log.info("fold %d: no %s to resume from; starting at epoch 1", fold, last_path)

    if norm is None:
        norm_ds = train_ds.with_transform(train_transform())
        norm = compute_norm_stats(norm_ds, cfg.norm_samples, derive_seed(fold_seed, _NORM), cfg, device, info, progress)
        if main:
            log.info("fold %d: normalisation mean %.5f SD %.5f (%d augmented samples)", fold, norm["mean"], norm["std"], cfg.norm_samples)
    in_channels = int(spec["in_channels"])

    writer = None
    if cfg.tensorboard and main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(fold_dir / "tensorboard"))
        except ImportError:
            log.warning("tensorboard is not installed (pip install 'mammoseg[tensorboard]'); not logging to it")

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        net = module
        if info.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        return net

    net: torch.nn.Module | None = None
    frozen_state: bool | None = None
    fold_dir.mkdir(parents=True, exist_ok=True)
    end_epoch = total_epochs if stop_after_epoch is None else min(total_epochs, stop_after_epoch)
    last_phase = final_phase(cfg)

    for epoch in range(start_epoch, end_epoch + 1):
        t0 = time.perf_counter()
        seed_everything(derive_seed(fold_seed, _EPOCH, epoch))
        frozen = encoder_frozen_at(cfg, epoch)
        if frozen != frozen_state:
            if frozen:
                core.freeze_encoder()
            else:
                core.unfreeze_encoder()
            net = wrap(core)  # DDP must see which parameters train
            frozen_state = frozen
        assert net is not None
        phase = phase_at_epoch(cfg, epoch)
        loss_fn = loss_for_phase(cfg, phase)
        lr = optimiser.param_groups[0]["lr"]
        sampler.set_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch, core, optimiser)

        # ---- train
        net.train()
        loss_sum, n_seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"fold {fold} epoch {epoch}/{total_epochs} [{phase}]",
                   unit="batch", leave=False, disable=not (progress and main))
        t_train = time.perf_counter()
        for images, masks in bar:
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            x = normalise_batch(images, norm, in_channels)
            loss = optimisation_step(net, x, masks, loss_fn, optimiser, precision, device, channels_last)
            bs = images.shape[0]
            loss_sum += float(loss.detach()) * bs
            n_seen += bs
            rate = n_seen * info.world_size / max(time.perf_counter() - t_train, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / n_seen:.4f}", img_s=f"{rate:.1f}")
        bar.close()
        if on_epoch_end is not None:
            on_epoch_end(epoch, core, optimiser)
        scheduler.step()
        train_sum, train_n = all_reduce_sum([loss_sum, float(n_seen)], device)
        train_loss = train_sum / max(train_n, 1.0)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"fold {fold} epoch {epoch}: training loss is {train_loss}; lower optimiser.lr?")

        # ---- validate
        val_loss, val_dice = evaluate_fold(core, val_loader, loss_fn, norm, in_channels, device, precision, channels_last)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "phase": phase, "lr": lr, "train_loss": train_loss,
               "val_loss": val_loss, "val_dice": val_dice, "seconds": seconds}
        history.append(row)
        improved = phase == last_phase and val_loss < best["val_loss"]
        if improved:
            best = {"epoch": epoch, "val_loss": val_loss, "val_dice": val_dice}
        finished = epoch == total_epochs

        if main:
            common = dict(image_size=image_size, fold=fold)
            if improved:
                save_checkpoint(fold_dir / "best.pt", core, spec, norm, config_dict,
                                epoch=epoch, val_loss=val_loss, val_dice=val_dice, **common)
            save_checkpoint(
                last_path, core, spec, norm, config_dict, epoch=epoch, val_loss=val_loss, val_dice=val_dice,
                optimiser=optimiser.state_dict(), scheduler=scheduler.state_dict(),
                scaler=precision.scaler.state_dict() if precision.scaler is not None else None,
                rng=rng_state(), history=history, best=best, finished=finished,
                world_size=info.world_size, **common,
            )
            write_log(fold_dir / "log.csv", history)
            plot_learning_curve(fold_dir / "learning_curve.png", history,
                                f"fold {fold}: {spec['encoder']}-{spec['decoder']}", cfg.epochs.combo)
            if writer is not None:
                for key in ("train_loss", "val_loss", "val_dice", "lr"):
                    writer.add_scalar(key, row[key], epoch)
                writer.flush()
            log.info(
                "fold %d epoch %d/%d [%s] lr %.1e  train %.4f  val %.4f  dice %.4f  %.1f s (%.1f img/s)%s",
                fold, epoch, total_epochs, phase, lr, train_loss, val_loss, val_dice, seconds,
                train_n / max(seconds, 1e-9), "  *best" if improved else "",
            )
        barrier()

    if writer is not None:
        writer.close()
    return FoldResult(fold, int(best["epoch"]), float(best["val_loss"]), float(best["val_dice"]))


def optimisation_step(
    net: torch.nn.Module,
    x: torch.Tensor,
    masks: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimiser: torch.optim.Optimizer,
    precision: Precision,
    device: torch.device,
    channels_last: bool,
) -> torch.Tensor:
    """One forward + backward + optimiser step on a normalised batch; returns the loss."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast(device):
        logits = net(x)
    loss = loss_fn(logits, masks)
    optimiser.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimiser)
        precision.scaler.update()
    else:
        loss.backward()
        optimiser.step()
    return loss


@torch.no_grad()
def evaluate_fold(
    model: torch.nn.Module,
    loader: DataLoader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    norm: Mapping[str, float],
    in_channels: int,
    device: torch.device,
    precision: Precision | None = None,
    channels_last: bool = False,
) -> tuple[float, float]:
    """(mean validation loss per image, mean per-image Dice at 0.5), reduced over DDP ranks."""
    model.eval()
    loss_sum = dice_sum = n = 0.0
    for images, masks in loader:
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        x = normalise_batch(images, norm, in_channels)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (precision.autocast(device) if precision else contextlib.nullcontext()):
            logits = model(x)
        bs = images.shape[0]
        loss_sum += float(loss_fn(logits, masks)) * bs
        dice_sum += float(dice_per_image(logits, masks).sum())
        n += bs
    loss_sum, dice_sum, n = all_reduce_sum([loss_sum, dice_sum, n], device)
    if n == 0:
        return float("nan"), float("nan")
    return loss_sum / n, dice_sum / n


# ----------------------------------------------------------------------------------------
# cross-validation


def _prepare_run_dir(cfg: ExperimentConfig, run_dir: Path, overwrite: bool, main: bool) -> None:
    """Refuse a run folder holding a different config (unless overwrite); write config.yaml."""
    import yaml

    cfg_path = run_dir / "config.yaml"
    start_fresh = False
    if cfg_path.is_file():
        try:
            saved = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            config_from_dict(saved, label=str(cfg_path))
        except (ValueError, yaml.YAMLError) as exc:
            if not overwrite:
                raise ValueError(f"{cfg_path}: unreadable run config ({exc}); use --overwrite to replace the run") from exc
            saved = {}
        diffs = [d for d in config_differences(saved, cfg.to_dict()) if d not in RUNTIME_KEYS]
        if overwrite:
            start_fresh = True
        elif diffs:
            raise FileExistsError(
                f"{run_dir}: already holds a run with a different config (differs in {', '.join(diffs)}); "
                "use --overwrite to replace it, or choose another --out"
            )
    elif (run_dir / "folds.csv").exists() or any(run_dir.glob("fold[0-9]*")):
        if not overwrite:
            raise FileExistsError(f"{run_dir}: holds run files but no config.yaml; use --overwrite to replace them")
        start_fresh = True
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if start_fresh:
            (run_dir / "folds.csv").unlink(missing_ok=True)
            for d in run_dir.glob("fold[0-9]*"):
                if d.is_dir() and d.name[4:].isdigit():
                    shutil.rmtree(d)
            log.info("%s: --overwrite: previous run outputs removed", run_dir)
        save_config(cfg, cfg_path)
    barrier()


def parse_folds(text: str | None, n_folds: int) -> list[int] | None:
    """`"0,2"` → [0, 2] (checked against n_folds); None/"" → None (all folds)."""
    if text is None or not str(text).strip():
        return None
    try:
        folds = sorted({int(p) for p in str(text).split(",") if p.strip()})
    except ValueError:
        raise ValueError(f"--folds {text!r}: expected comma-separated fold numbers, e.g. 0,2") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise ValueError(f"--folds {text!r}: fold(s) {bad} outside 0..{n_folds - 1} (n_folds={n_folds})")
    return folds


def run_cross_validation(
    config: ExperimentConfig,
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    folds: Sequence[int] | None = None,
    resume: bool = False,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[FoldResult]:
    """Patient-grouped k-fold training over the `train` split into `run_dir`.

    Finished folds are skipped, so rerunning the same command continues a run;
    `resume` also continues an interrupted fold from its `last.pt` (without it, an
    unfinished fold starts again from epoch 1). Under torchrun, every process calls this;
    rank 0 writes the files.
    """
    from mammoseg.folds import load_or_create_folds

    cfg = config
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    info = env_dist_info()
    dev = resolve_device(device, info)
    init_distributed(info, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    rows = load_manifest(data_dir, split="train")
    if not rows:
        raise ValueError(f"{data_dir / 'manifest.csv'}: no images in the train split")
    fold_list = list(range(cfg.n_folds)) if folds is None else sorted(set(folds))
    bad = [f for f in fold_list if not 0 <= f < cfg.n_folds]
    if bad:
        raise ValueError(f"folds {bad} outside 0..{cfg.n_folds - 1} (n_folds={cfg.n_folds})")

    _prepare_run_dir(cfg, run_dir, overwrite, info.is_main)
    folds_path = run_dir / "folds.csv"
    fold_of = None
    if info.is_main:
        fold_of = load_or_create_folds(folds_path, rows, cfg.n_folds, cfg.seed)
    fold_of = broadcast_object(fold_of)
    assert isinstance(fold_of, dict)

    results = []
    for k in fold_list:
        fold_dir = run_dir / f"fold{k}"
        if fold_finished(fold_dir, cfg.total_epochs):
            if info.is_main:
                log.info("fold %d: already finished (%s); skipping", k, fold_dir / "best.pt")
            ck = read_checkpoint(fold_dir / "best.pt")
            results.append(FoldResult(k, int(ck["epoch"]), float(ck["val_loss"]), float(ck.get("val_dice", float("nan"))), skipped=True))
            continue
        if not resume and (fold_dir / "last.pt").exists() and info.is_main:
            log.warning("fold %d: %s holds an unfinished fold; starting it again (use --resume to continue it)", k, fold_dir)
            for name in ("best.pt", "last.pt", "log.csv", "learning_curve.png"):
                (fold_dir / name).unlink(missing_ok=True)
        barrier()
        train_rows = [r for r in rows if fold_of[r["id"]] != k]
        val_rows = [r for r in rows if fold_of[r["id"]] == k]
        if info.is_main:
            log.info("fold %d: %d training / %d validation images (%d / %d patients)", k, len(train_rows), len(val_rows),
                     len({r["patient_id"] for r in train_rows}), len({r["patient_id"] for r in val_rows}))
        results.append(train_fold(cfg, data_dir, train_rows, val_rows, fold_dir, k, dev, info,
                                  resume=resume, progress=progress))
    if info.is_main:
        for r in results:
            log.info("fold %d: best epoch %d, val loss %.4f, val Dice %.4f%s", r.fold, r.best_epoch,
                     r.best_val_loss, r.best_val_dice, " (already done)" if r.skipped else "")
    return results


def read_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a fold's log.csv."""
    return read_csv(path)
