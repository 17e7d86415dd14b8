"""Fold checkpoints: what `train` writes and `predict`/`export` read back.

A checkpoint is a plain dict saved with `torch.save` (atomically), holding only
tensors, numbers, strings, lists and dicts, so it loads with `weights_only=True`:

- `model`: the state dict (always on CPU, unwrapped from DDP / torch.compile);
- `model_spec`: `encoder, decoder, in_channels, dropout` — enough for `build_model`
  to rebuild the network without any pretrained weights;
- `norm`: `{"mean": float, "std": float}` on the [0, 1] image scale;
- `image_size`, `config` (the resolved experiment config as a dict), `fold`, `epoch`,
  `val_loss`, plus whatever else the caller passes (e.g. optimiser state in `last.pt`).

Reading one back trusts nothing in it: the archive's member sizes are checked before torch
inflates anything (`check_archive`), and a file that needs arbitrary code to unpickle is
refused in one line (`read_checkpoint`).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mammoseg.io import atomic_path
from mammoseg.models import build_model

#: Marker stored in every checkpoint so that foreign `.pt` files are recognised as such.
CHECKPOINT_FORMAT = "mammoseg-fold"
CHECKPOINT_VERSION = 1

#: Keys `load_fold_model` requires (docs/architecture.md).
REQUIRED_KEYS: tuple[str, ...] = (
    "model",
    "model_spec",
    "norm",
    "image_size",
    "config",
    "fold",
    "epoch",
    "val_loss",
)
MODEL_SPEC_KEYS: tuple[str, ...] = ("encoder", "decoder", "in_channels", "dropout")
#: Caps on what a checkpoint archive may inflate to (`check_archive`): one member (a tensor's
#: storage: the largest of a ResNet34-UNet is a few MB, a whole optimiser state a few hundred) ...
MAX_MEMBER_BYTES = 2 * 2**30
#: ... and all members together: this many times the file's size, plus an allowance.
MAX_INFLATION = 64
INFLATION_ALLOWANCE = 64 * 2**20


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (`.module`) and `torch.compile` (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the unwrapped model's state dict (exact values, contiguous layout)."""
    return {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in unwrap_model(model).state_dict().items()
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    model_spec: Mapping[str, Any],
    norm: Mapping[str, float],
    config: Mapping[str, Any],
    **extra: Any,
) -> None:
    """Write a fold checkpoint atomically; `extra` holds image_size, fold, epoch, val_loss, ...."""
    missing = [k for k in MODEL_SPEC_KEYS if k not in model_spec]
    if missing:
        raise ValueError(f"{path}: model_spec lacks {', '.join(missing)}")
    if "mean" not in norm or "std" not in norm:
        raise ValueError(f"{path}: norm must hold 'mean' and 'std'")
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": cpu_state_dict(model),
        "model_spec": {k: model_spec[k] for k in MODEL_SPEC_KEYS},
        "norm": {"mean": float(norm["mean"]), "std": float(norm["std"])},
        "config": dict(config),
    }
    for key in ("image_size", "fold", "epoch", "val_loss"):
        ckpt.setdefault(key, None)
    ckpt.update(extra)
    with atomic_path(path, durable=True) as tmp:  # hours of training: fsync before the rename
        torch.save(ckpt, tmp)


def _one_line(exc: BaseException) -> str:
    """A library's (often multi-line) message as one line of at most 300 characters."""
    return " ".join(str(exc).split())[:300]


def check_archive(path: Path) -> None:
    """Refuse, before torch reads it, a checkpoint whose members would inflate beyond the caps.

    `torch.save` writes a zip archive of stored (uncompressed) members, but `torch.load` also
    inflates deflated ones, in full: a 390 KB file can allocate 400 MB. The archive's directory
    says how large each member is (and torch's reader never writes past that size), so it is
    checked first: each member at most `MAX_MEMBER_BYTES`, all together at most
    `MAX_INFLATION` × the file's size + `INFLATION_ALLOWANCE` (a stored archive is about its
    file's size). A file that is no zip archive (the legacy torch format, or anything else) is
    refused too: mammoseg never writes one.
    """
    size = path.stat().st_size
    budget = MAX_INFLATION * size + INFLATION_ALLOWANCE
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a mammoseg checkpoint: not a zip archive as torch.save writes "
                         f"({_one_line(exc)})") from None
    total = 0
    for member in members:
        if member.file_size > MAX_MEMBER_BYTES:
            raise ValueError(f"{path}: checkpoint member {member.filename!r} would inflate to "
                             f"{member.file_size / 2**20:.0f} MB, more than the {MAX_MEMBER_BYTES / 2**20:.0f} MB "
                             "a member may; not loaded")
        total += member.file_size
        if total > budget:
            raise ValueError(f"{path}: checkpoint would inflate beyond {budget / 2**20:.0f} MB from a "
                             f"{size / 2**20:.1f} MB file (at most {MAX_INFLATION}× its size + "
                             f"{INFLATION_ALLOWANCE / 2**20:.0f} MB); not loaded")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint dict; one-line errors for missing, corrupt, oversized or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    check_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():  # torch's words for a forbidden global
            raise ValueError(f"{path}: not a readable checkpoint (UnpicklingError: {_one_line(exc)})") from None
        raise ValueError(f"{path}: not a mammoseg checkpoint: it needs arbitrary code to load (pickle); "
                         "mammoseg loads weights only") from None
    except Exception as exc:  # torch raises many kinds (zip, runtime) for a bad file
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {_one_line(exc)})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a mammoseg fold checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: mammoseg checkpoint lacks key(s) {', '.join(missing)}")
    spec_missing = [k for k in MODEL_SPEC_KEYS if k not in ckpt["model_spec"]]
    if spec_missing:
        raise ValueError(f"{path}: model_spec lacks {', '.join(spec_missing)}")
    return ckpt


def load_fold_model(
    path: str | os.PathLike, map_location: Any = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the fold's network from its checkpoint, load the weights strictly, eval mode."""
    ckpt = read_checkpoint(path, map_location=map_location)
    return model_from_checkpoint(path, ckpt, map_location), ckpt


def model_from_checkpoint(path: str | os.PathLike, ckpt: Mapping[str, Any], map_location: Any = "cpu") -> torch.nn.Module:
    """The network of a checkpoint read by `read_checkpoint`, its weights loaded strictly, eval mode."""
    spec = dict(ckpt["model_spec"])
    try:
        model = build_model(
            encoder=spec["encoder"],
            decoder=spec["decoder"],
            encoder_weights=None,
            in_channels=spec["in_channels"],
            dropout=spec["dropout"],
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: model_spec {spec} cannot be built: {exc}") from None
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match model {spec}: {_one_line(exc)}") from exc
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    model.eval()
    return model


def normalise_batch(x: torch.Tensor, norm: Mapping[str, float], in_channels: int) -> torch.Tensor:
    """(B,1,H,W) images in [0,1] → standardised model input; grey repeated for 3-channel encoders."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"normalise_batch expects (B,1,H,W) images, got shape {tuple(x.shape)}")
    std = float(norm["std"])
    if not std > 0:
        raise ValueError(f"normalisation std must be positive, got {std}")
    x = (x - float(norm["mean"])) / std
    if in_channels == 3:
        x = x.repeat(1, 3, 1, 1)
    elif in_channels != 1:
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    return x
