"""The fold driver: patient-grouped k-fold training over the `train` split into a run folder.

Run-folder policy: a run folder belongs to one config (`config.yaml`); a rerun with the same
config continues it (finished folds are skipped; an unfinished fold only with `resume`), a
different config is refused unless `overwrite`, which removes the old models and everything
derived from them (holdout predictions, evaluation, reproduce state, view). Nothing is deleted
without `overwrite`. Folds are assigned once (`folds.csv`) and reused. Under torchrun every
process calls `run_cross_validation`; rank 0 locks the folder and writes the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from mammoseg.checkpoint import read_checkpoint
from mammoseg.config import RUNTIME_KEYS, ExperimentConfig, config_differences, config_from_dict, save_config
from mammoseg.distributed import DistInfo, barrier, broadcast_object, env_dist_info, init_distributed, resolve_device
from mammoseg.folders import FolderLock, LockRequest, OutputFolder, open_output_folder, remove_entries
from mammoseg.inference.oof import describe_record, ensure_postprocessing
from mammoseg.layouts import FoldFiles, RunLayout
from mammoseg.training.checks import check_training_input
from mammoseg.training.fold import FoldJob, FoldResult, train_fold
from mammoseg.training.folds import load_or_create_folds
from mammoseg.training.schedule import unused_milestones
from mammoseg.training.state import fold_finished

log = logging.getLogger(__name__)


def select_folds(folds: str | Sequence[int] | None, n_folds: int) -> list[int]:
    """The folds to train: `"0,2"` or [0, 2] (checked against n_folds); None/"" → all of them."""
    if folds is None or (isinstance(folds, str) and not folds.strip()):
        return list(range(n_folds))
    if isinstance(folds, str):
        try:
            folds = [int(p) for p in folds.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"--folds {folds!r}: expected comma-separated fold numbers, e.g. 0,2") from None
    chosen = sorted(set(int(f) for f in folds))
    bad = [f for f in chosen if not 0 <= f < n_folds]
    if bad:
        raise ValueError(f"--folds: fold(s) {bad} outside 0..{n_folds - 1} (n_folds={n_folds})")
    return chosen


def _saved_config(layout: RunLayout) -> dict | None:
    """The config a run folder was made with (None if it has none); unreadable → refused."""
    if not layout.config.is_file():
        return None
    try:
        saved = yaml.safe_load(layout.config.read_text(encoding="utf-8")) or {}
        config_from_dict(saved, label=str(layout.config))
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{layout.config}: unreadable run config ({exc}); use --overwrite to replace the run") from exc
    return saved


def open_run_folder(cfg: ExperimentConfig, layout: RunLayout, data_dir: Path, overwrite: bool) -> OutputFolder:
    """Open (and lock) a run folder for `cfg`: a new one, the same config's (continued), or with
    `overwrite` an earlier run's, whose models and everything derived from them are removed first."""
    folder = open_output_folder(layout.root, "train", inputs=[data_dir], owned=layout.owned_entries(),
                                overwrite=False, resume=True, lock=LockRequest(wait=60))
    try:
        if overwrite:
            for fold in layout.folds():  # never delete a fold another job is training
                FolderLock(layout.root, fold_lock(fold.fold), what=f"{fold.dir}").release()
            remove_entries(layout.root, layout.owned_entries())
        saved = _saved_config(layout) if folder.continued else None
        diffs = [d for d in config_differences(saved, cfg.to_dict()) if d not in RUNTIME_KEYS] if saved else []
        if diffs:
            raise FileExistsError(
                f"{layout.root}: already holds a run with a different config (differs in {', '.join(diffs)}); "
                "use --overwrite to replace it, or choose another --out")
        if folder.continued and saved is None and (layout.folds_csv.exists() or layout.folds()):
            raise FileExistsError(f"{layout.root}: holds run files but no config.yaml; use --overwrite to replace them")
        if overwrite:
            log.info("%s: --overwrite: previous run outputs removed", layout.root)
        save_config(cfg, layout.config)
    except BaseException:
        folder.close()
        raise
    return folder


def fold_lock(k: int) -> str:
    """The lock one job holds while it trains fold k, so folds can train side by side as separate jobs."""
    return f".mammoseg.fold{k}.lock"


def _refuse_unfinished(files: FoldFiles) -> None:
    """An unfinished fold is continued only when asked (--resume) and never deleted silently."""
    try:
        epoch = read_checkpoint(files.last)["epoch"]
    except ValueError:
        epoch = "?"
    raise FileExistsError(f"{files.dir}: fold {files.fold} is unfinished (last.pt after epoch {epoch}); "
                          "use --resume to continue it, or --overwrite to start the whole run again")


@dataclass(frozen=True)
class CrossValidationRun:
    """What every fold of one `run_cross_validation` call shares (config, run folder, images and
    their fold assignment, device, process, flags), passed to the per-fold steps as one value."""

    cfg: ExperimentConfig
    layout: RunLayout
    data_dir: Path
    rows: list[dict[str, str]]
    fold_of: dict[str, int]
    device: torch.device
    info: DistInfo
    resume: bool
    progress: bool


def _train_or_skip(run: CrossValidationRun, k: int) -> FoldResult:
    lock = FolderLock(run.layout.root, fold_lock(k), what=f"{run.layout.fold(k).dir}") if run.info.is_main else None
    try:
        return _train_fold_of_run(run, k)
    finally:
        if lock is not None:
            lock.release()


def _train_fold_of_run(run: CrossValidationRun, k: int) -> FoldResult:
    cfg, info, rows, fold_of = run.cfg, run.info, run.rows, run.fold_of
    files = run.layout.fold(k)
    if fold_finished(files, cfg.total_epochs):
        if info.is_main:
            log.info("fold %d: already finished (%s); skipping", k, files.best)
        ck = read_checkpoint(files.best)
        return FoldResult(k, int(ck["epoch"]), float(ck["val_loss"]), float(ck.get("val_dice", float("nan"))), skipped=True)
    if not run.resume and files.last.exists():
        _refuse_unfinished(files)
    train_rows = [r for r in rows if fold_of[r["id"]] != k]
    val_rows = [r for r in rows if fold_of[r["id"]] == k]
    if info.is_main:
        log.info("fold %d: %d training / %d validation images (%d / %d patients)", k, len(train_rows), len(val_rows),
                 len({r["patient_id"] for r in train_rows}), len({r["patient_id"] for r in val_rows}))
    job = FoldJob(cfg, run.data_dir, train_rows, val_rows, files, run.device, info,
                  resume=run.resume, progress=run.progress)
    return train_fold(job)


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
    """Patient-grouped k-fold training over the `train` split of `data_dir` into `run_dir`.

    Finished folds are skipped, so rerunning the same command continues a run; `resume`
    also continues an interrupted fold from its `last.pt` (without it, an unfinished fold
    starts again from epoch 1).
    """
    cfg, data_dir, layout = config, Path(data_dir), RunLayout(run_dir)
    info = env_dist_info()
    dev = resolve_device(device, info)
    init_distributed(info, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    chosen = select_folds(folds, cfg.n_folds)
    rows, assigned = check_training_input(cfg, data_dir, layout, chosen, overwrite)  # before anything is written
    unused = unused_milestones(cfg)
    if unused and info.is_main:
        log.warning("%s", unused)
    # The run folder's lock is held while its config and folds are settled; each fold is then
    # trained under its own lock, so folds can run as separate jobs into the same folder.
    with open_run_folder(cfg, layout, data_dir, overwrite) if info.is_main else contextlib.nullcontext():
        fold_of = (load_or_create_folds(layout.folds_csv, rows, cfg.n_folds, cfg.seed, assigned=assigned)
                   if info.is_main else None)
    barrier()
    fold_of = broadcast_object(fold_of)
    assert isinstance(fold_of, dict)
    run = CrossValidationRun(cfg, layout, data_dir, rows, fold_of, dev, info, resume, progress)
    results = [_train_or_skip(run, k) for k in chosen]
    if info.is_main:
        for r in results:
            log.info("fold %d: best epoch %d, val loss %.4f, val Dice %.4f%s", r.fold, r.best_epoch,
                     r.best_val_loss, r.best_val_dice, " (already done)" if r.skipped else "")
        choose_postprocessing(run)
    return results


def choose_postprocessing(run: CrossValidationRun) -> None:
    """Once every fold of the run is trained, the post-processing chosen on the folds' out-of-fold
    predictions (`mammoseg.inference.oof`), unless the run already holds the choice for these models."""
    missing = [k for k in range(run.cfg.n_folds) if not fold_finished(run.layout.fold(k), run.cfg.total_epochs)]
    if missing:
        log.info("post-processing: not chosen yet, fold(s) %s not trained (it is chosen on the out-of-fold "
                 "predictions once every fold is)", ", ".join(map(str, missing)))
        return
    record, chosen_now = ensure_postprocessing(run.layout.root, run.data_dir, run.device, run.cfg.batch_size)
    log.info("%s%s", describe_record(record), "" if chosen_now else " (already chosen for these models)")
