"""Typed experiment configuration: dataclass defaults = the paper, YAML presets, key=value overrides.

`load_config("paper")` / `load_config("demo")` read the presets shipped in
`mammoseg/presets/`; any other name is read as a YAML file (it may be partial: what it
does not say keeps the default). Overrides are `dotted.key=value` strings whose values are
parsed with `yaml.safe_load` and checked against the field's type, so `batch_size=8`
is an int and `batch_size=eight` is an error naming `batch_size`.

The resolved config is saved as `RUN/config.yaml`; reading that file back gives an equal
config, which is how a rerun recognises its own run folder.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mammoseg.io import write_text_atomic
from mammoseg.models import DECODERS, ENCODERS

PRESETS: tuple[str, ...] = ("paper", "demo")
AUGMENTATIONS: tuple[str, ...] = ("table1", "geometric")

#: Keys that may differ between the config saved in a run folder and a rerun's config:
#: they change speed or logging, never the numbers a fold produces (on CPU).
RUNTIME_KEYS: frozenset[str] = frozenset({"num_workers", "cache_images", "tensorboard", "compile"})


@dataclass
class ModelConfig:
    """Which network: `build_model(encoder, decoder, encoder_weights, in_channels, dropout)`."""

    #: the encoder: resnet34 (ImageNet-style) or resnet22 (GMIC's global network).
    encoder: str = "resnet34"
    #: the decoder: unet or fpn.
    decoder: str = "unet"
    #: "imagenet" (ResNet34), "gmic:PATH" (GMIC's sample_model_N.p, ResNet22), a state-dict file, or null for
    #: random init. Checked (the file read into the encoder) before a run writes anything.
    encoder_weights: str | None = "imagenet"
    #: null = the encoder's natural input (3 for ResNet34, 1 for ResNet22).
    in_channels: int | None = None
    #: dropout in the segmentation head, before its final 1×1 convolution, in [0, 1).
    dropout: float = 0.2


@dataclass
class EpochsConfig:
    """Length of the two loss phases: combo (BCE + soft Jaccard), then Focal Tversky."""

    #: epochs of the first phase, with the combo loss (BCE + soft Jaccard).
    combo: int = 20
    #: epochs of the second phase, with the Focal Tversky loss; the best checkpoint is chosen among them.
    focal_tversky: int = 60

    @property
    def total(self) -> int:
        return self.combo + self.focal_tversky


@dataclass
class OptimiserConfig:
    """Adam."""

    #: Adam's initial learning rate.
    lr: float = 1e-4
    #: Adam's weight decay (L2).
    weight_decay: float = 1e-4


@dataclass
class LossConfig:
    """Parameters of `combo_loss` and `focal_tversky_loss` (docs/method.md)."""

    #: combo loss: weight of the soft Jaccard term (BCE gets 1 - combo_weight), in [0, 1].
    combo_weight: float = 0.5
    #: Focal Tversky: weight of false negatives (1 - alpha weighs false positives), in [0, 1].
    alpha: float = 0.7
    #: Focal Tversky: the focal exponent (the loss is (1 - Tversky index)^(1/gamma)).
    gamma: float = 4.0 / 3.0
    #: smoothing term of both losses.
    eps: float = 1e-6


@dataclass
class ExperimentConfig:
    """Everything that decides what `mammoseg train` does; defaults are the paper's protocol."""

    #: the experiment's name (a preset's name, or a config file's stem); shown in reports.
    name: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: EpochsConfig = field(default_factory=EpochsConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    #: MultiStepLR: lr × lr_gamma after each of these (1-based) epochs; one at or past the last epoch
    #: never takes effect (train warns).
    lr_milestones: list[int] = field(default_factory=lambda: [40, 50, 60])
    #: the factor of each learning-rate drop, in (0, 1].
    lr_gamma: float = 0.1
    #: the encoder is frozen for epochs 1..freeze_encoder_epochs.
    freeze_encoder_epochs: int = 2
    #: batch size for training and validation (per process under DDP).
    batch_size: int = 32
    #: random crop used in training (at most the prepared size); validation sees the full prepared image.
    crop_size: int = 448
    #: training augmentation: "table1" (every row of the paper's Table 1) or "geometric"
    #: (only its geometric rows: rotation, scale, translation, crop, flip).
    augmentation: str = "table1"
    #: patient-grouped cross-validation folds over the train split (at least 2).
    n_folds: int = 5
    #: seed of the folds, the initialisation, the data order and every augmentation.
    seed: int = 0
    #: DataLoader worker processes; null = one per core this process may use, less one for the step.
    num_workers: int | None = None
    #: keep decoded prepared images in memory (uint16), read once before training.
    cache_images: bool = False
    #: CUDA: bf16 autocast where supported, else fp16 with a GradScaler. Ignored on CPU.
    amp: bool = True
    #: CPU: bf16 autocast (off by default: CPU training is float32).
    cpu_bf16: bool = False
    #: CUDA: channels_last memory format for model and inputs.
    channels_last: bool = True
    #: torch.compile the model: null = on CUDA (falls back to eager, logged, if compilation fails), off on CPU.
    compile: bool | None = None
    #: DDP: convert BatchNorm to SyncBatchNorm.
    sync_batchnorm: bool = False
    #: how many augmented training samples estimate the normalisation mean and SD.
    norm_samples: int = 256
    #: also log every epoch to TensorBoard (fold{k}/tensorboard/; needs the tensorboard extra).
    tensorboard: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def total_epochs(self) -> int:
        return self.epochs.total


# ----------------------------------------------------------------------------------------
# type checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widened to float, etc.)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"config key {key!r}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it spells.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    raise TypeError(f"config key {key!r}: unsupported field type {tp!r}")  # a bug in this module


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Build dataclass `cls` from `data` on top of `base` (or the defaults), checking every key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config key {prefix.rstrip('.') or '<top>'!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    obj = base if base is not None else cls()
    values = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ValueError(f"unknown config key {dotted!r}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            values[key] = _from_mapping(tp, value, prefix=f"{dotted}.", base=getattr(obj, key))
        else:
            values[key] = _coerce(dotted, value, tp)
    return dataclasses.replace(obj, **values)


def _check_values(cfg: ExperimentConfig) -> None:
    """Range checks that types alone cannot express; errors name the key."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ValueError(f"config key {key!r}: {what}")

    encoders, decoders = sorted(ENCODERS), sorted(DECODERS)
    need(cfg.model.encoder in encoders, "model.encoder", f"expected one of {', '.join(encoders)}, got {cfg.model.encoder!r}")
    need(cfg.model.decoder in decoders, "model.decoder", f"expected one of {', '.join(decoders)}, got {cfg.model.decoder!r}")
    need(cfg.model.in_channels in (None, 1, 3), "model.in_channels", f"must be 1, 3 or null, got {cfg.model.in_channels}")
    need(0.0 <= cfg.model.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {cfg.model.dropout}")
    need(cfg.epochs.combo >= 0, "epochs.combo", "must be >= 0")
    need(cfg.epochs.focal_tversky >= 0, "epochs.focal_tversky", "must be >= 0")
    need(cfg.epochs.total > 0, "epochs", "at least one epoch is needed")
    need(cfg.optimiser.lr > 0, "optimiser.lr", "must be > 0")
    need(cfg.optimiser.weight_decay >= 0, "optimiser.weight_decay", "must be >= 0")
    need(0.0 <= cfg.loss.combo_weight <= 1.0, "loss.combo_weight", "must be in [0, 1]")
    need(0.0 <= cfg.loss.alpha <= 1.0, "loss.alpha", "must be in [0, 1]")
    need(cfg.loss.gamma > 0, "loss.gamma", "must be > 0")
    need(cfg.loss.eps > 0, "loss.eps", "must be > 0")
    need(list(cfg.lr_milestones) == sorted(set(cfg.lr_milestones)), "lr_milestones", "must be strictly increasing")
    need(all(m >= 1 for m in cfg.lr_milestones), "lr_milestones", "epochs are numbered from 1")
    need(0.0 < cfg.lr_gamma <= 1.0, "lr_gamma", "must be in (0, 1]")
    need(cfg.freeze_encoder_epochs >= 0, "freeze_encoder_epochs", "must be >= 0")
    need(cfg.batch_size >= 1, "batch_size", "must be >= 1")
    need(cfg.augmentation in AUGMENTATIONS, "augmentation", f"expected one of {', '.join(AUGMENTATIONS)}, got {cfg.augmentation!r}")
    need(cfg.crop_size >= 64, "crop_size", "must be >= 64 (the models need at least 64 px)")
    need(cfg.n_folds >= 2, "n_folds", "must be >= 2")
    need(cfg.seed >= 0, "seed", "must be >= 0")
    need(cfg.num_workers is None or cfg.num_workers >= 0, "num_workers", "must be >= 0 or null")
    need(cfg.norm_samples >= 1, "norm_samples", "must be >= 1")


# ----------------------------------------------------------------------------------------
# loading


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"config key {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` → `{"a": {"b": 1}, "c": "x"}` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ValueError(f"override {item!r}: expected key=value (e.g. batch_size=8)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ValueError(f"config key {key!r}: cannot parse value {text!r}: {exc}") from exc
        _set_dotted(tree, key, value)
    return tree


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{label}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected a mapping of config keys at the top level")
    return data


def preset_path(name: str) -> Path:
    """Path of a shipped preset YAML."""
    ref = resources.files("mammoseg") / "presets" / f"{name}.yaml"
    return Path(str(ref))


def config_from_dict(data: Mapping[str, Any], label: str = "config") -> ExperimentConfig:
    """Defaults, then `data` (which may be partial), checked; errors mention `label`."""
    try:
        cfg = _from_mapping(ExperimentConfig, data)
        _check_values(cfg)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from exc
    return cfg


def load_config(name_or_path: str | os.PathLike, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """A preset name (`paper`, `demo`) or a YAML file, then `key=value` overrides, all checked."""
    text = str(name_or_path)
    if text in PRESETS:
        path, label, default_name = preset_path(text), f"preset {text!r}", text
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such config file (presets are: {', '.join(PRESETS)})"
            )
        label, default_name = str(path), path.stem
    data = _read_yaml(path, label)
    data.setdefault("name", default_name)
    try:
        cfg = _from_mapping(ExperimentConfig, data)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from exc
    cfg = _from_mapping(ExperimentConfig, parse_overrides(overrides), base=cfg)
    _check_values(cfg)
    return cfg


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, cfg.to_yaml())


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for the rerun check)."""
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for key in keys:
        dotted = f"{prefix}{key}"
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(config_differences(va, vb, prefix=f"{dotted}."))
        elif va != vb:
            out.append(dotted)
    return out


# ----------------------------------------------------------------------------------------
# the key reference (docs/config.md is generated from the dataclasses above)


@dataclass(frozen=True)
class ConfigKey:
    """One config key as docs/config.md lists it."""

    key: str
    type: str
    default: Any
    demo: Any
    meaning: str


def _field_comments(cls: type) -> dict[str, str]:
    """The `#:` comment lines right above each field of `cls`: the field's meaning."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            continue
        name = text.split(":", 1)[0]
        if pending and name.isidentifier():
            comments[name] = " ".join(pending)
        pending = []
    return comments


def _type_text(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_text(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_text(typing.get_args(tp)[0])}"
    return {bool: "true/false"}.get(tp, _type_name(tp))


def _keys_of(cls: type, default: Any, demo: Any, prefix: str = "") -> list[ConfigKey]:
    hints, comments = typing.get_type_hints(cls), _field_comments(cls)
    found = []
    for f in dataclasses.fields(cls):
        tp, dotted = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            found += _keys_of(tp, getattr(default, f.name), getattr(demo, f.name), f"{dotted}.")
            continue
        meaning = comments.get(f.name, "")
        if not meaning:
            raise ValueError(f"config key {dotted!r} has no `#:` comment in mammoseg/config.py")  # a bug here
        found.append(ConfigKey(dotted, _type_text(tp), getattr(default, f.name), getattr(demo, f.name), meaning))
    return found


def config_keys() -> list[ConfigKey]:
    """Every config key (dotted), in the order of the resolved YAML, with its type, its default (the paper's),
    its value in the demo preset and its meaning."""
    return _keys_of(ExperimentConfig, ExperimentConfig(), load_config("demo"))


def _value_text(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return f"[{', '.join(_value_text(v) for v in value)}]"
    return str(value)


def config_reference_markdown() -> str:
    """The key table of docs/config.md (a test checks the page holds exactly this)."""
    lines = ["| key | type | default (paper) | demo | meaning |", "| --- | --- | --- | --- | --- |"]
    for k in config_keys():
        lines.append(f"| `{k.key}` | {k.type} | `{_value_text(k.default)}` | `{_value_text(k.demo)}` | {k.meaning} |")
    return "\n".join(lines) + "\n"
