"""`mammoseg export --ensemble`: a run's fold ensemble as one ONNX graph (`models.export.EnsembleNet`).

Why one graph: a consumer without PyTorch (a viewer plug-in, a C++ service) then runs one
session with one call per image and gets the same mean probability `predict` computes; the
preprocessing contract (windowing, padding, resize, image size), threshold and run id travel in
the file's metadata_props, so it says what input it needs and which run it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mammoseg.bundle.writer import fold_checkpoints, preprocessing_contract, run_threshold
from mammoseg.checkpoint import model_from_checkpoint
from mammoseg.inference.run_identity import run_id
from mammoseg.layouts import RunLayout
from mammoseg.models import display_name
from mammoseg.models.export import DEFAULT_OPSET, PROBABILITY_NAME, EnsembleNet, export_onnx
from mammoseg.version import __version__


def ensemble_net(run_dir: str | os.PathLike) -> tuple[EnsembleNet, dict[int, dict[str, Any]]]:
    """The run's folds (each checked against config.yaml) as one `EnsembleNet`, and their checkpoints."""
    layout = RunLayout(run_dir)
    ckpts = fold_checkpoints(layout)
    models = [model_from_checkpoint(layout.fold(k).best, c) for k, c in ckpts.items()]
    first = next(iter(ckpts.values()))
    net = EnsembleNet(models, [c["norm"] for c in ckpts.values()], int(first["model_spec"]["in_channels"]))
    return net.eval(), ckpts


def export_ensemble_onnx(run_dir: str | os.PathLike, out: str | os.PathLike, threshold: float | None = None,
                         opset: int = DEFAULT_OPSET, sample_size: int = 256) -> tuple[EnsembleNet, dict[str, Any]]:
    """Write the ensemble graph to `out` (atomically); the module exported and the metadata recorded."""
    layout = RunLayout(run_dir)
    net, ckpts = ensemble_net(layout.root)
    threshold = run_threshold(layout) if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    spec = next(iter(ckpts.values()))["model_spec"]
    contract = preprocessing_contract(ckpts, threshold)
    metadata = {
        "producer": "mammoseg", "mammoseg_version": __version__,
        "run_name": layout.root.resolve().name, "run_id": run_id(layout.root),
        "architecture": display_name(spec["encoder"], spec["decoder"]),
        "model_spec": json.dumps(dict(spec), sort_keys=True), "folds": json.dumps(list(ckpts)),
        "image_size": contract["image_size"], "threshold": threshold,
        "preprocessing": json.dumps(contract, sort_keys=True),
        "input": "image: (B, 1, H, W) float32 in [0, 1], the prepared uint16 image / 65535 (see preprocessing)",
        "output": f"{PROBABILITY_NAME}: (B, 1, H, W), the mean of the folds' sigmoid probabilities; "
                  "mask = probability >= threshold",
    }
    export_onnx(net, Path(out), in_channels=1, sample_size=(sample_size, sample_size), opset=opset,
                metadata=metadata, output_name=PROBABILITY_NAME)
    return net, metadata
