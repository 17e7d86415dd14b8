"""Pretrained encoder weights: torchvision's ImageNet ResNet34, GMIC's ResNet22, local checkpoints.

`load_encoder_weights(encoder, spec)` accepts
- ``"imagenet"``: torchvision's resnet34 IMAGENET1K_V1 file, taken from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/resnet34-b627a593.pth``) or downloaded there with its hash
  checked;
- ``"gmic:/path/sample_model_N.p"``: GMIC's global network (keys ``ds_net.*``; GMIC's other
  sub-networks are ignored) for resnet22;
- a local path: a state dict in the encoder's own layout (torchvision's for resnet34), or
  one with ``ds_net.*`` keys (GMIC), or a mammoseg model state dict (``encoder.*`` keys);
  a dict wrapping it under ``"model"`` or ``"state_dict"`` is unwrapped.

Keys match strictly (only a classifier's ``fc.*`` is ignored; BatchNorm's
``num_batches_tracked`` may be absent, as in older files); every missing or unexpected key
and every shape mismatch is listed in the error. A 3-channel first convolution loaded into
a 1-channel encoder is summed over its RGB inputs (a grey image replicated to RGB gives the
same response).
"""

from __future__ import annotations

import os
import re
import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

#: encoder name -> (URL, file name) of torchvision's ImageNet checkpoint. The 8 hex digits in
#: the file name are the start of its SHA-256, which torch.hub checks after downloading.
IMAGENET_WEIGHTS: dict[str, tuple[str, str]] = {
    "resnet34": (
        "https://download.pytorch.org/models/resnet34-b627a593.pth",
        "resnet34-b627a593.pth",
    ),
}

#: encoder names whose layout GMIC's global network (`ds_net.*`) maps onto
GMIC_ENCODERS = ("resnet22",)

_MAX_LISTED = 25


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the reason."""


# --------------------------------------------------------------------------- entry point


def load_encoder_weights(encoder: nn.Module, spec: str | os.PathLike) -> None:
    """Load pretrained weights described by `spec` into `encoder` (in place)."""
    name = getattr(encoder, "name", type(encoder).__name__)
    text = os.fspath(spec)
    if text == "imagenet":
        path = imagenet_weights_path(name)
        load_state_into(encoder, read_state_dict(path), path, ignore=_is_classifier)
    elif text.startswith("gmic:"):
        path = Path(text[len("gmic:"):]).expanduser()
        state = read_state_dict(path)
        load_state_into(encoder, gmic_to_encoder(state, path, name), path)
    else:
        path = Path(text).expanduser()
        state = read_state_dict(path)
        if any(k.startswith("ds_net.") for k in state):
            state = gmic_to_encoder(state, path, name)
        elif not any(k in state for k in encoder.state_dict()) and any(
            k.startswith("encoder.") for k in state
        ):
            # A whole mammoseg model: take its encoder.
            state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        load_state_into(encoder, state, path, ignore=_is_classifier)


# --------------------------------------------------------------------------- files


def imagenet_weights_path(encoder_name: str = "resnet34") -> Path:
    """Path of the cached ImageNet checkpoint, downloading it (hash checked) if it is not there."""
    if encoder_name not in IMAGENET_WEIGHTS:
        known = ", ".join(sorted(IMAGENET_WEIGHTS))
        raise WeightsError(f"no ImageNet weights for encoder {encoder_name!r} (available for: {known})")
    url, file_name = IMAGENET_WEIGHTS[encoder_name]
    path = imagenet_cache_path(encoder_name)
    if path.is_file():
        return path
    try:
        torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(path.parent),
            map_location="cpu",
            progress=True,
            check_hash=True,
            file_name=file_name,
            weights_only=True,
        )
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsError(
            f"{path}: ImageNet weights for {encoder_name} are not in the torch hub cache and "
            f"could not be downloaded from {url} ({type(exc).__name__}: {exc}). "
            f"Without network access, copy that file to {path} "
            f"(or set TORCH_HOME to a folder whose hub/checkpoints/ holds it)."
        ) from exc
    return path


def imagenet_cache_path(encoder_name: str = "resnet34") -> Path:
    """Where torch.hub keeps the ImageNet checkpoint (respects TORCH_HOME)."""
    _, file_name = IMAGENET_WEIGHTS[encoder_name]
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict (tensors only, `weights_only=True`), unwrapping "model"/"state_dict"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, pickled code objects, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path}: cannot be read as a PyTorch weights file (truncated, corrupt or not a "
            f"state dict): {type(exc).__name__}: {reason}"
        ) from exc
    for _ in range(3):
        if isinstance(obj, Mapping) and not _tensor_keys(obj):
            inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _tensor_keys(obj):
        raise WeightsError(
            f"{path}: holds no state dict of tensors (got {type(obj).__name__}); expected a "
            f"state dict, or a dict with one under 'model' or 'state_dict'"
        )
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _tensor_keys(obj: Mapping) -> list:
    return [k for k, v in obj.items() if isinstance(v, torch.Tensor)]


def _is_classifier(key: str) -> bool:
    return key.startswith("fc.")


# --------------------------------------------------------------------------- GMIC


_GMIC_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"ds_net\.first_conv\.weight"), lambda m: "stem.weight"),
    (
        re.compile(r"ds_net\.layer_list\.(\d+)\.0\.downsample\.0\.weight"),
        lambda m: f"layer{int(m[1]) + 1}.0.downsample.weight",
    ),
    (
        re.compile(r"ds_net\.layer_list\.(\d+)\.(\d+)\.(bn1|conv1|bn2|conv2)\.(\w+)"),
        lambda m: f"layer{int(m[1]) + 1}.{m[2]}.{m[3]}.{m[4]}",
    ),
    (re.compile(r"ds_net\.final_bn\.(\w+)"), lambda m: f"final_bn.{m[1]}"),
]


def gmic_to_encoder(state: Mapping[str, torch.Tensor], path: str | os.PathLike, encoder_name: str) -> dict[str, torch.Tensor]:
    """Rename GMIC's `ds_net.*` keys to the ResNet22 encoder's; other GMIC sub-networks are dropped.

    A `ds_net.*` key that fits no rule is kept under its own name, so it is reported as unexpected.
    """
    if encoder_name not in GMIC_ENCODERS:
        raise WeightsError(
            f"{path}: GMIC weights fit the {', '.join(GMIC_ENCODERS)} encoder, not {encoder_name!r}"
        )
    gmic = {k: v for k, v in state.items() if k.startswith("ds_net.")}
    if not gmic:
        prefixes = sorted({k.split(".", 1)[0] for k in state})
        raise WeightsError(
            f"{path}: no GMIC global-network keys (ds_net.*) in this file; its top-level "
            f"prefixes are: {', '.join(prefixes[:_MAX_LISTED])}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in gmic.items():
        for pattern, rename in _GMIC_RULES:
            m = pattern.fullmatch(key)
            if m:
                out[rename(m)] = value
                break
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- strict loading


def load_state_into(
    encoder: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | os.PathLike,
    ignore: Callable[[str], bool] = lambda key: False,
) -> None:
    """Copy `state` into `encoder` with strict key and shape checks; errors list every problem."""
    own = encoder.state_dict()
    input_key = getattr(encoder, "input_conv_key", "")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not ignore(k)]
    mismatched: list[str] = []
    new_state: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state:
            new_state[key] = target
            continue
        value = state[key]
        if key == input_key:
            value = adapt_input_conv(value, target.shape[1])
        if tuple(value.shape) != tuple(target.shape):
            mismatched.append(f"{key}: file {tuple(state[key].shape)} vs model {tuple(target.shape)}")
            continue
        new_state[key] = value
    if missing or unexpected or mismatched:
        parts = [f"{source}: weights do not fit the {getattr(encoder, 'name', '')} encoder".rstrip()]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if keys:
                shown = ", ".join(keys[:_MAX_LISTED])
                more = f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
                parts.append(f"{len(keys)} {label}: {shown}{more}")
        raise WeightsError("; ".join(parts))
    encoder.load_state_dict(new_state, strict=True)


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """First-conv weight for `in_channels` inputs: RGB → grey sums over the RGB axis.

    A grey image replicated to three channels then gives exactly the RGB network's response.
    Other channel changes are left alone (and reported as a shape mismatch).
    """
    if weight.dim() == 4 and weight.shape[1] == 3 and in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight
