"""The paper's fold ensemble: every fold model's sigmoid *probability* is averaged (not the
thresholded masks), then the average is thresholded (0.5 by default). Pure: tensors in,
tensors out; loading the fold models from a run folder, each checked against the run, is `load_ensemble`."""

from __future__ import annotations

import copy
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mammoseg.checkpoint import model_from_checkpoint, normalise_batch, read_checkpoint
from mammoseg.layouts import RunLayout
from mammoseg.models import ENCODERS
from mammoseg.models.registry import lookup


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
    """The mean of the members' probabilities (the paper's fold ensemble), (B,1,H,W) float32.

    Without autograd, members that are the same network run as one batched model
    (`StackedEnsemble`, measured faster on CPU than the loop: README "How fast"); otherwise,
    and with autograd, the members run one after another.
    """
    if not members:
        raise ValueError("ensemble_probability needs at least one model")
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (B,1,H,W), got {tuple(images.shape)}")
    stacked = None if torch.is_grad_enabled() else stacked_for(members)
    if stacked is not None:
        return stacked(images, tta=tta)
    return looped_probability(members, images, tta=tta)


def looped_probability(members: Sequence[EnsembleMember], images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """`ensemble_probability` with the members run one after another."""
    total = None
    for member in members:
        prob = member_probability(member, images, tta=tta)
        if prob.shape != images.shape:
            raise ValueError(f"{member.source or 'model'}: output shape {tuple(prob.shape)} != input {tuple(images.shape)}")
        total = prob if total is None else total + prob
    return total / len(members)


#: Stacked ensembles built so far, by their members' models (stacking copies the weights: once per ensemble).
_STACKED: dict[tuple[int, ...], tuple[list[weakref.ref], StackedEnsemble]] = {}
_STACKED_KEEP = 4


def stackable(members: Sequence[EnsembleMember]) -> bool:
    """True for two or more members of one network class with the same parameter and buffer shapes and channels."""
    if len(members) < 2 or len({type(m.model) for m in members}) != 1 or len({m.in_channels for m in members}) != 1:
        return False
    shapes = [[(k, tuple(v.shape), v.dtype, v.device) for k, v in m.model.state_dict().items()] for m in members]
    return all(shape == shapes[0] for shape in shapes[1:])


def stacked_for(members: Sequence[EnsembleMember]) -> StackedEnsemble | None:
    """The cached `StackedEnsemble` of these members (inference: their weights are not changed), or None."""
    key = tuple(id(m.model) for m in members) + tuple(hash((m.norm["mean"], m.norm["std"])) for m in members)
    cached = _STACKED.get(key)
    if cached is not None and [ref() for ref in cached[0]] == [m.model for m in members]:
        return cached[1]
    if not stackable(members):
        return None
    if len(_STACKED) >= _STACKED_KEEP:
        _STACKED.pop(next(iter(_STACKED)))
    stacked = StackedEnsemble(members)
    _STACKED[key] = ([weakref.ref(m.model) for m in members], stacked)
    return stacked


class StackedEnsemble:
    """The members as one batched model: their weights stacked (`torch.func.stack_module_state`)
    and one `torch.vmap` of `functional_call` over them, the same numbers as `ensemble_probability`
    (within float32 rounding) in one call instead of a loop over the folds.

    `ensemble_probability` uses it without autograd: on the CPU it measured up to 1.4× faster
    than the loop (README "How fast"; `benchmarks/predict.py --json`: `loop_s` vs `stacked_s`).
    Built once per ensemble (stacking copies the weights); every member must be the same network.
    """

    def __init__(self, members: Sequence[EnsembleMember]) -> None:
        if not members:
            raise ValueError("StackedEnsemble needs at least one model")
        channels = {m.in_channels for m in members}
        if len(channels) != 1:
            raise ValueError(f"members take different channel counts {sorted(channels)}; they cannot be stacked")
        models = [m.model for m in members]
        self.params, self.buffers = torch.func.stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        device = next(iter(self.params.values())).device
        self.mean = torch.tensor([float(m.norm["mean"]) for m in members], device=device).view(-1, 1, 1, 1, 1)
        self.std = torch.tensor([float(m.norm["std"]) for m in members], device=device).view(-1, 1, 1, 1, 1)
        self.in_channels = channels.pop()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        def one(params: dict, buffers: dict, xi: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self.base, (params, buffers), (xi,))

        return torch.vmap(one)(self.params, self.buffers, x)

    def __call__(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """The mean probability (B,1,H,W) float32 of images (B,1,H,W) in [0,1]."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B,1,H,W), got {tuple(images.shape)}")
        x = (images.unsqueeze(0) - self.mean) / self.std  # (F,B,1,H,W): each fold's own normalisation
        if self.in_channels == 3:
            x = x.repeat(1, 1, 3, 1, 1)
        prob = torch.sigmoid(self._logits(x).float())
        if tta:
            flipped = torch.sigmoid(self._logits(torch.flip(x, dims=[-1])).float())
            prob = 0.5 * (prob + torch.flip(flipped, dims=[-1]))
        return prob.mean(dim=0)


def batch_probability(members: Sequence[EnsembleMember], images: Sequence[np.ndarray], device: torch.device,
                      tta: bool = False) -> np.ndarray:
    """The ensemble's probabilities (B, H, W) float32 for standardised uint16 model inputs (H, W):
    what `predict` and `Segmenter` both run, so both give the same numbers."""
    x = torch.from_numpy(np.stack(images).astype(np.float32) / 65535.0)
    return ensemble_probability(members, x.unsqueeze(1).to(device), tta=tta)[:, 0].float().cpu().numpy()


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
    """A run's fold models, the prepared image size they were all trained at, and whether their
    images were cut to the breast first (`breast_crop`: a file given directly must be too)."""

    members: list[EnsembleMember]
    image_size: int
    breast_crop: bool = False

    @property
    def checkpoints(self) -> list[str]:
        return [m.source for m in self.members]


def load_ensemble(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                  folds: Sequence[int] | None = None) -> Ensemble:
    """Every fold's best model of a run (or those of `folds` only), in fold order; a clear error when
    there is none, or when a chosen fold has no checkpoint.

    Each checkpoint is checked against the run before it is used (`check_member`): the network it
    was trained as must be the one the run's config.yaml says, and its input normalisation must be
    finite, so a fold copied in from another run, or a damaged one, is refused by name rather than
    silently averaged into every prediction.
    """
    layout = RunLayout(run_dir)
    if not layout.root.is_dir():
        raise FileNotFoundError(f"{layout.root}: no such run folder")
    paths = layout.best_checkpoints()
    if not paths:
        raise FileNotFoundError(f"{layout.root}: no fold*/best.pt checkpoints; has this run been trained (`mammoseg train`)?")
    if folds is not None:
        paths = _chosen_folds(layout, folds)
    expected = run_architecture(layout)
    members, sizes, crops = [], {}, {}
    for path in paths:
        ckpt = read_checkpoint(path, map_location=device)
        check_member(path, ckpt, expected)
        model = model_from_checkpoint(path, ckpt, map_location=device)
        sizes[str(path)] = int(ckpt["image_size"])
        crops[str(path)] = bool(ckpt.get("breast_crop", False))  # older checkpoints: no crop
        members.append(EnsembleMember(model, ckpt["norm"], int(ckpt["model_spec"]["in_channels"]), str(path)))
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{layout.root}: fold checkpoints were trained at different image sizes: {sizes}")
    check_same_crop(layout.root, crops)
    return Ensemble(members, next(iter(sizes.values())), next(iter(crops.values())))


def check_same_crop(root: Path, crops: Mapping[str, bool]) -> None:
    """Refuse folds trained some on breast-cropped images and some not (naming them): one input
    cannot be standardised for both."""
    if len(set(crops.values())) > 1:
        cropped = ", ".join(p for p, c in crops.items() if c)
        uncropped = ", ".join(p for p, c in crops.items() if not c)
        raise ValueError(f"{root}: fold checkpoints disagree on the breast crop: trained on cropped images: {cropped}; "
                         f"on uncropped images: {uncropped}")


@dataclass(frozen=True)
class Architecture:
    """The network a run trains: what config.yaml's `model` section and a checkpoint's `model_spec` both say."""

    encoder: str
    decoder: str
    in_channels: int

    def __str__(self) -> str:
        return f"{self.encoder}-{self.decoder} with {self.in_channels} input channel{'s' if self.in_channels != 1 else ''}"


def run_architecture(layout: RunLayout) -> Architecture:
    """The architecture the run's config.yaml says (an unset `in_channels` is the encoder's own)."""
    path = layout.config
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; the fold checkpoints cannot be checked against the run "
                                f"without it (is {layout.root} a run folder made by `mammoseg train`?)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("encoder"), str) or not isinstance(model.get("decoder"), str):
        raise ValueError(f"{path}: no model section with an encoder and a decoder")
    channels = model.get("in_channels")
    if channels is None:
        channels = lookup(ENCODERS, "encoder", model["encoder"]).default_in_channels
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise ValueError(f"{path}: model.in_channels {channels!r} is not an integer")
    return Architecture(model["encoder"], model["decoder"], channels)


def check_member(path: Path, ckpt: Mapping[str, Any], expected: Architecture) -> None:
    """Refuse (one line naming the checkpoint) a fold trained as another network than the run's,
    or whose normalisation is not a finite mean and a finite positive standard deviation."""
    spec = ckpt["model_spec"]
    try:
        trained = Architecture(str(spec["encoder"]), str(spec["decoder"]), int(spec["in_channels"]))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: model_spec {dict(spec)!r} is not an encoder, a decoder and a channel count") from None
    if trained != expected:
        same_net = (trained.encoder, trained.decoder) == (expected.encoder, expected.decoder)
        shown = (str(trained), str(expected)) if same_net else (f"{trained.encoder}-{trained.decoder}",
                                                                f"{expected.encoder}-{expected.decoder}")
        raise ValueError(f"{path}: trained as {shown[0]}, but the run's config.yaml says {shown[1]}")
    if ckpt["image_size"] is None:
        raise ValueError(f"{path}: checkpoint does not record the image size it was trained on")
    norm = ckpt["norm"]
    try:
        mean, std = float(norm["mean"]), float(norm["std"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: normalisation {norm!r} is not a mean and a standard deviation") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"{path}: normalisation mean {mean}, std {std}: a finite mean and a finite positive "
                         "std are needed; the checkpoint is damaged")
