"""The paper's fold ensemble: every fold model's sigmoid *probability* is averaged (not the
thresholded masks), then the average is thresholded (0.5 by default). Pure: tensors in,
tensors out; loading the fold models from a run folder is `load_ensemble`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mammoseg.checkpoint import load_fold_model, normalise_batch
from mammoseg.layouts import RunLayout


@dataclass
class EnsembleMember:
    """One fold model with the input normalisation it was trained with."""

    model: torch.nn.Module
    norm: Mapping[str, float]
    in_channels: int = 1
    source: str = ""


def member_probability(member: EnsembleMember, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Sigmoid probability (B,1,H,W) of one model for images (B,1,H,W) in [0,1].

    With `tta` the horizontally flipped image is predicted too and its probability is
    flipped back before the two are averaged.
    """
    x = normalise_batch(images, member.norm, member.in_channels)
    prob = torch.sigmoid(member.model(x).float())
    if tta:
        flipped = torch.sigmoid(member.model(torch.flip(x, dims=[-1])).float())
        prob = 0.5 * (prob + torch.flip(flipped, dims=[-1]))
    return prob


def ensemble_probability(members: Sequence[EnsembleMember], images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """The mean of the members' probabilities (the paper's fold ensemble), (B,1,H,W) float32."""
    if not members:
        raise ValueError("ensemble_probability needs at least one model")
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (B,1,H,W), got {tuple(images.shape)}")
    total = None
    for member in members:
        prob = member_probability(member, images, tta=tta)
        if prob.shape != images.shape:
            raise ValueError(f"{member.source or 'model'}: output shape {tuple(prob.shape)} != input {tuple(images.shape)}")
        total = prob if total is None else total + prob
    return total / len(members)


def threshold_probability(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """uint8 0/255 mask of the pixels whose probability is at least `threshold`."""
    return np.where(prob >= threshold, 255, 0).astype(np.uint8)


def _chosen_folds(layout: RunLayout, folds: Sequence[int]) -> list[Path]:
    """The best checkpoints of `folds` (--folds), each of which must exist."""
    trained = [f.fold for f in layout.folds() if f.best.is_file()]
    missing = [k for k in folds if k not in trained]
    if missing:
        raise ValueError(f"{layout.root}: --folds {','.join(map(str, folds))}: fold {missing[0]} has no best.pt here "
                         f"(this run's trained folds: {', '.join(map(str, trained))})")
    return [layout.fold(k).best for k in sorted(set(folds))]


@dataclass
class Ensemble:
    """A run's fold models and the prepared image size they were all trained at."""

    members: list[EnsembleMember]
    image_size: int

    @property
    def checkpoints(self) -> list[str]:
        return [m.source for m in self.members]


def load_ensemble(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                  folds: Sequence[int] | None = None) -> Ensemble:
    """Every fold's best model of a run (or those of `folds` only), in fold order; a clear error when
    there is none, or when a chosen fold has no checkpoint."""
    layout = RunLayout(run_dir)
    if not layout.root.is_dir():
        raise FileNotFoundError(f"{layout.root}: no such run folder")
    paths = layout.best_checkpoints()
    if not paths:
        raise FileNotFoundError(f"{layout.root}: no fold*/best.pt checkpoints; has this run been trained (`mammoseg train`)?")
    if folds is not None:
        paths = _chosen_folds(layout, folds)
    members, sizes = [], {}
    for path in paths:
        model, ckpt = load_fold_model(path, map_location=device)
        if ckpt["image_size"] is None:
            raise ValueError(f"{path}: checkpoint does not record the image size it was trained on")
        sizes[str(path)] = int(ckpt["image_size"])
        members.append(EnsembleMember(model, ckpt["norm"], int(ckpt["model_spec"]["in_channels"]), str(path)))
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{layout.root}: fold checkpoints were trained at different image sizes: {sizes}")
    return Ensemble(members, next(iter(sizes.values())))
