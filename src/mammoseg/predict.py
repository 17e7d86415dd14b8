"""Fold-ensemble prediction: a trained run's fold models → masks for prepared images or DICOMs.

Drives the three units of `mammoseg.inference`: `inputs` (what to predict), `ensemble` (the
mean of the fold models' probabilities) and `outputs` (the prediction folder). Broken
inputs are listed in errors.csv and the rest go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mammoseg.dicom_seg import SegIdentity, require_highdicom
from mammoseg.distributed import resolve_device
from mammoseg.inference.ensemble import Ensemble, ensemble_probability, load_ensemble
from mammoseg.inference.inputs import InputError, collect_inputs, prefetched
from mammoseg.inference.outputs import OUTPUT_ENTRIES, finish_folder, write_outputs
from mammoseg.folders import open_output_folder

log = logging.getLogger(__name__)


def _check_arguments(inputs: Sequence[Any], threshold: float, batch_size: int, dicom_seg: bool) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if not inputs:
        raise ValueError("no inputs given")
    if dicom_seg:
        require_highdicom()


@contextlib.contextmanager
def _all_cores(device: torch.device) -> Iterator[None]:
    """On CPU, let torch use every core while predicting (the caller's setting is restored)."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _probabilities(ensemble: Ensemble, loaded: Sequence[Any], device: torch.device, tta: bool) -> np.ndarray:
    """(B, size, size) float32 ensemble probabilities of a batch of loaded inputs."""
    x = torch.from_numpy(np.stack([li.model_input for li in loaded]).astype(np.float32) / 65535.0)
    return ensemble_probability(ensemble.members, x.unsqueeze(1).to(device), tta=tta)[:, 0].float().cpu().numpy()


def predict(
    run_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    threshold: float = 0.5,
    tta: bool = False,
    save_prob: bool = False,
    dicom_seg: bool = False,
    split: str | None = None,
    batch_size: int = 4,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    seg_identity: SegIdentity | None = None,
) -> dict[str, Any]:
    """Predict masks for prepared folders and/or DICOM files with a run's fold ensemble.

    Writes the prediction folder of docs/architecture.md; returns its summary (`n_predicted`,
    `n_errors`, `out_dir`, `checkpoints`, ...). The folder must be new or empty unless `overwrite`.
    `seg_identity` (run and threshold) is recorded in each DICOM SEG, so `--store` can find it again.
    """
    _check_arguments(inputs, threshold, batch_size, dicom_seg)
    out, dev = Path(out_dir), resolve_device(device)
    ensemble = load_ensemble(run_dir, dev)
    items, errors = collect_inputs(inputs, split=split)
    if dicom_seg and any(i.kind == "prepared" for i in items):
        log.warning("--dicom-seg: DICOM Segmentations are written for DICOM inputs only, not prepared images")
    rows: list[dict[str, Any]] = []
    folder = open_output_folder(out, "predict", inputs=inputs, owned=OUTPUT_ENTRIES, overwrite=overwrite)
    with folder, _all_cores(dev), torch.inference_mode(), tqdm(total=len(items), desc="predict", unit="img",
                                                               disable=not progress) as bar:
        for loaded, load_errors, n in prefetched(items, ensemble.image_size, batch_size, want_dataset=dicom_seg):
            errors += load_errors
            probs = _probabilities(ensemble, loaded, dev, tta) if loaded else []
            for li, prob in zip(loaded, probs):
                try:
                    rows.append(write_outputs(li, prob, out, threshold, save_prob, dicom_seg, seg_identity))
                except Exception as exc:  # e.g. an unwritable SEG for an odd header
                    errors.append(InputError(li.item.input, f"{type(exc).__name__}: {exc}"))
            bar.update(n)
        for err in errors:
            warnings.warn(f"skipped {err.input}: {err.reason}", stacklevel=2)
        summary = {"run": str(Path(run_dir)), "checkpoints": ensemble.checkpoints, "image_size": ensemble.image_size,
                   "threshold": threshold, "tta": tta, "n_predicted": len(rows), "n_errors": len(errors),
                   "out_dir": str(out)}
        finish_folder(out, rows, errors, summary)
    return summary
