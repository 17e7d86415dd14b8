"""ONNX export of a segmentation model with dynamic batch, height and width.

`EnsembleNet` puts a whole fold ensemble in one graph: each fold's input normalisation, its
sigmoid and the mean of the folds, so one session and one call give the ensemble probability.

Uses PyTorch's TorchScript-based exporter (`dynamo=False`): it needs only the `onnx`
package, and it records the decoder's resize-to-skip sizes as graph operations, so the
exported model accepts any H, W ≥ 64 like the PyTorch one.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mammoseg.io import write_bytes_atomic

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
PROBABILITY_NAME = "probability"
DEFAULT_OPSET = 17
#: The oldest opset that expresses the decoders' resize to a skip connection's (dynamic) size.
MIN_OPSET = 10


def supported_opsets() -> range:
    """The opsets `export_onnx` can write: from MIN_OPSET to the newest both torch's exporter and the
    installed onnx package know (checked before a model is loaded, so a wrong --opset is bad input)."""
    try:
        import onnx
    except ImportError as exc:  # the optional extra
        raise ImportError("ONNX export needs the 'onnx' package: pip install 'mammoseg[onnx]'") from exc
    newest = onnx.defs.onnx_opset_version()
    constants = getattr(torch.onnx, "_constants", None)  # torch's own limit; not public, so optional
    newest = min(newest, getattr(constants, "ONNX_MAX_OPSET", newest))
    return range(MIN_OPSET, newest + 1)


class EnsembleNet(nn.Module):
    """Images (B, 1, H, W) in [0, 1] → the mean of the folds' sigmoid probabilities (B, 1, H, W).

    Each fold's normalisation (mean, std on the [0, 1] scale) and channel repeat are part of
    the module, as `checkpoint.normalise_batch` and `inference.ensemble.member_probability` do them.
    """

    def __init__(self, models: list[nn.Module], norms: list[Mapping[str, float]], in_channels: int) -> None:
        super().__init__()
        if not models or len(models) != len(norms):
            raise ValueError("EnsembleNet needs one normalisation per model, and at least one model")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        self.folds = nn.ModuleList(models)
        self.norms = [(float(n["mean"]), float(n["std"])) for n in norms]
        self.in_channels = 1  # what the module takes; each fold's own channel count is `fold_channels`
        self.fold_channels = int(in_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = None
        for model, (mean, std) in zip(self.folds, self.norms):
            x = (images - mean) / std
            if self.fold_channels == 3:
                x = x.repeat(1, 3, 1, 1)
            prob = torch.sigmoid(model(x).float())
            total = prob if total is None else total + prob
        return total / len(self.folds)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    in_channels: int | None = None,
    sample_size: tuple[int, int] = (256, 256),
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, Any] | None = None,
    output_name: str = OUTPUT_NAME,
) -> Path:
    """Write `model` (eval mode, float32, CPU) to `path` as ONNX; returns the path.

    Input ``image`` (B, C, H, W) float32, output ``logits`` (B, 1, H, W) (`output_name`:
    ``probability`` for an `EnsembleNet`); B, H and W are dynamic. `metadata` (e.g. the normalisation mean/std and the training image size) is
    stored as string metadata_props so a consumer can prepare its input the same way.
    """
    try:
        import onnx
    except ImportError as exc:  # the optional extra
        raise RuntimeError("ONNX export needs the 'onnx' package: pip install 'mammoseg[onnx]'") from exc
    path = Path(path)
    channels = int(in_channels if in_channels is not None else getattr(model, "in_channels"))
    if min(sample_size) < 64:
        raise ValueError(f"sample_size must be at least 64×64, got {sample_size}")
    # Export a CPU float32 copy so the caller's model (device, mode, dtype) is untouched.
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    sample = torch.zeros(1, channels, *sample_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter is deprecated in favour of the dynamo one, which needs onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            net,
            (sample,),
            buffer,
            dynamo=False,
            opset_version=int(opset),
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_axes={INPUT_NAME: dynamic, output_name: dynamic},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto)
    write_bytes_atomic(path, proto.SerializeToString())
    return path


def onnx_max_abs_diff(
    model: nn.Module, path: str | os.PathLike, size: tuple[int, int] = (320, 288), batch: int = 1, seed: int = 0
) -> float:
    """Largest |output difference| (logits; an ensemble's probabilities) between `model` and the ONNX
    file on a random input of `size`.

    Needs onnxruntime. Use a size other than the export sample to check the dynamic axes.
    """
    import onnxruntime as ort  # optional extra: mammoseg[onnx]

    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    draw = torch.rand if isinstance(net, EnsembleNet) else torch.randn  # an ensemble takes images in [0, 1]
    x = draw(batch, int(getattr(net, "in_channels")), *size, generator=generator)
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: x.numpy()})
    if got.shape != expected.shape:
        raise ValueError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(got - expected).max())
