"""A one-call Python API: a trained run's fold ensemble applied to one mammogram.

Why: a notebook, a viewer plug-in or another pipeline wants `mask = seg.segment(path).mask`,
not a prediction folder. `Segmenter` does what `mammoseg predict` does for one input — read
(DICOM windowed, PNG/TIFF as they are), standardise (`geometry.standardise`), ensemble the
fold models without autograd (`torch.inference_mode`), apply the run's post-processing
(`mammoseg.inference.postprocess`), map the probability back onto the image's own grid and
threshold it — with the same functions, so its mask equals the mask `predict` writes for the
same file, byte for byte.

    from mammoseg import Segmenter

    seg = Segmenter.from_run("runs/r22-unet", device="auto")
    result = seg.segment("/archive/study/mg_l_cc.dcm")
    result.mask          # uint8 0/255 on the image's own grid
    result.probability   # float32 in [0, 1], same grid
    result.spacing       # (row, col) mm per pixel from the DICOM header, or None
    result.geometry      # how the image was padded and resized for the models (PadResize)

`Segmenter.from_run` also takes a model bundle (`.mseg`, `mammoseg export --bundle`) or the name
of an installed one; the bundle is verified member by member before anything is loaded, and its
published threshold is used unless another is given (the run's or bundle's chosen component rules
apply either way; `postprocessing=False` leaves them out).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mammoseg.bundle.store import resolve_model
from mammoseg.distributed import resolve_device
from mammoseg.geometry import PadResize, standardise
from mammoseg.inference.ensemble import Ensemble, batch_probability, load_ensemble
from mammoseg.inference.inputs import InputItem, LoadedItem
from mammoseg.inference.outputs import output_mask
from mammoseg.inference.postprocess import PostProcessing
from mammoseg.inference.predict import PredictOptions, all_cores, resolve_postprocessing
from mammoseg.inference.run_identity import run_id
from mammoseg.io import as_uint16
from mammoseg.layouts import RunLayout
from mammoseg.prepare.image import read_image


@dataclass(frozen=True)
class Segmentation:
    """One mammogram's result on its own pixel grid."""

    mask: np.ndarray  # uint8 0/255
    probability: np.ndarray  # float32 in [0, 1]
    spacing: tuple[float, float] | None  # (row, col) mm per pixel, when the DICOM header says
    geometry: PadResize  # the image's crop, padding and resizing to the models' input


class Segmenter:
    """A run's fold ensemble, loaded once, applied to one mammogram per `segment` call."""

    def __init__(self, ensemble: Ensemble, device: torch.device, threshold: float = 0.5, tta: bool = False,
                 rule: PostProcessing | None = None) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.ensemble, self.device, self.threshold, self.tta = ensemble, device, threshold, tta
        #: The component rules in force (`mammoseg.inference.postprocess`), at `threshold`.
        self.rule = replace(rule or PostProcessing(), threshold=threshold)

    @classmethod
    def from_run(cls, run: str | os.PathLike, device: str | None = "auto", folds: Sequence[int] | None = None,
                 threshold: float | None = None, tta: bool = False, postprocessing: bool = True) -> Segmenter:
        """Load `run`'s fold models (`folds`: a subset, default every fold) onto `device`
        (`auto`: CUDA when available, else the CPU); `run` is a run folder, a bundle file or an
        installed model's name. The run's chosen post-processing (postprocessing.json) applies unless
        `postprocessing` is False; `threshold` defaults to a bundle's published one, else the run's
        chosen one, else 0.5, and replaces only the threshold."""
        source = resolve_model(run)
        dev = resolve_device(device)
        ensemble = load_ensemble(source.run_dir, dev, folds=folds)
        if threshold is None and source.threshold is not None:
            threshold = source.threshold
        known = run_id(source.run_dir) if RunLayout(source.run_dir).postprocessing.is_file() else ""
        options = resolve_postprocessing(source.run_dir, PredictOptions(threshold=threshold,
                                                                         postprocessing=postprocessing), known)
        assert options.rule is not None
        return cls(ensemble, dev, options.rule.threshold, tta, options.rule)

    @property
    def image_size(self) -> int:
        """The side of the square the models were trained on (the prepared images' size)."""
        return self.ensemble.image_size

    def segment(self, image: str | os.PathLike | np.ndarray) -> Segmentation:
        """Segment a DICOM or PNG/TIFF file, or a grey image array (uint16 as windowed, or uint8)."""
        if isinstance(image, np.ndarray):
            pixels, spacing, name = as_uint16(image, "image array"), None, "array"
        else:
            pixels, meta = read_image(Path(image))
            spacing, name = _spacing(meta.get("pixel_spacing")), str(image)
        standard = standardise(pixels, self.image_size, crop=self.ensemble.breast_crop)
        loaded = LoadedItem(InputItem("image", name, "raster"), standard.image, pixels, plan=standard.plan)
        with all_cores(self.device), torch.inference_mode():
            (prob_model,) = batch_probability(self.ensemble.members, [standard.image], self.device, tta=self.tta)
        mask, probability, _grid = output_mask(loaded, prob_model, self.rule)
        return Segmentation(mask, probability, spacing, standard.plan)


def _spacing(value: object) -> tuple[float, float] | None:
    if not value:
        return None
    row, col = value  # type: ignore[misc]
    return float(row), float(col)
