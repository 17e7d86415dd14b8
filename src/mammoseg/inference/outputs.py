"""The prediction folder's per-image files (docs/architecture.md): masks, probabilities,
overlays, DICOM SEG. (Its CSVs and settings are `mammoseg.inference.journal`'s.)

A DICOM input's probability is mapped back onto its original pixel grid *before*
thresholding, so the mask matches the source image pixel for pixel (and a DICOM
Segmentation can reference it); a prepared input's mask stays on the prepared grid. The run's
post-processing (`mammoseg.inference.postprocess`) drops components on the model grid first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammoseg.dicom.seg import SegIdentity, build_dicom_seg, save_atomic
from mammoseg.dicom.sr import measurement_spacing, write_dicom_sr
from mammoseg.geometry import invert_probability
from mammoseg.inference.ensemble import threshold_probability
from mammoseg.inference.inputs import LoadedItem
from mammoseg.inference.journal import STEM
from mammoseg.inference.postprocess import PostProcessing, drop_components
from mammoseg.io import write_png
from mammoseg.journals import journal_entries
from mammoseg.layouts import PredictionLayout
from mammoseg.masses import find_masses

#: Folders and files `predict` owns inside a prediction folder (cleared by `overwrite=True`): its outputs and journals.
OUTPUT_ENTRIES = (*PredictionLayout.outputs(), *journal_entries(STEM))
#: Overlays of large originals are shrunk so their longer side is at most this.
OVERLAY_MAX_SIDE = 1024
#: Overlay colours (RGB): predicted contour, reference contour.
PRED_COLOUR = (255, 40, 40)
REF_COLOUR = (40, 255, 40)


def overlay_image(
    image: np.ndarray, pred: np.ndarray, reference: np.ndarray | None = None, max_side: int = OVERLAY_MAX_SIDE
) -> np.ndarray:
    """RGB uint8 picture: the image (8-bit) with the predicted and reference contours drawn.

    Large images are shrunk to `max_side` first so the overlay is quick to look at.
    """
    grey = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    h, w = grey.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = cv2.resize(grey, new, interpolation=cv2.INTER_AREA)
        pred = cv2.resize(pred, new, interpolation=cv2.INTER_NEAREST)
        if reference is not None:
            reference = cv2.resize(reference, new, interpolation=cv2.INTER_NEAREST)
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    for mask, colour in ((reference, REF_COLOUR), (pred, PRED_COLOUR)):
        if mask is not None:
            contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(rgb, contours, -1, colour, thickness)
    return rgb


def output_probability(loaded: LoadedItem, prob_model: np.ndarray) -> tuple[np.ndarray, str]:
    """The probability on the input's own grid, and that grid's name (`original` or `prepared`)."""
    if loaded.plan is not None:
        prob, grid = invert_probability(prob_model, loaded.plan), "original"
    else:
        prob, grid = prob_model, "prepared"
        if prob.shape != loaded.display.shape:
            prob = cv2.resize(prob, loaded.display.shape[::-1], interpolation=cv2.INTER_LINEAR)
    if prob.shape != loaded.display.shape:
        raise ValueError(f"{loaded.item.input}: probability shape {prob.shape} != image shape {loaded.display.shape}")
    return prob, grid


def write_dicom_objects(source: Any, mask: np.ndarray, prob: np.ndarray, paths: tuple[Path, Path | None],
                        identity: SegIdentity | None) -> None:
    """The image's DICOM SEG, and with an SR path its Measurement Report of the masses (`mammoseg.dicom.sr`),
    which references that SEG. The SR is written after the SEG, so an SR on disk always has its SEG."""
    seg_path, sr_path = paths
    seg = build_dicom_seg(mask > 0, source, identity=identity)
    save_atomic(seg, seg_path)
    if sr_path is not None:
        masses = find_masses(mask, measurement_spacing(source).mm, prob)
        write_dicom_sr(masses, source, seg, sr_path, identity=identity)


def output_mask(loaded: LoadedItem, prob_model: np.ndarray, rule: PostProcessing) -> tuple[np.ndarray, np.ndarray, str]:
    """(mask, raw probability, grid name) on the input's own grid: the rule's components are chosen on the
    model grid (`drop_components`), then the probability is mapped back and thresholded there."""
    prob, grid = output_probability(loaded, prob_model)
    kept = drop_components(prob_model, rule)
    cut = prob if kept is prob_model else output_probability(loaded, kept)[0]
    return threshold_probability(cut, rule.threshold), prob, grid


def write_outputs(
    loaded: LoadedItem, prob_model: np.ndarray, out: Path, rule: PostProcessing | float, save_prob: bool,
    dicom_seg: bool, seg_identity: SegIdentity | None = None, dicom_sr: bool = False,
) -> dict[str, Any]:
    """Write one input's mask under `rule` (a bare threshold: that threshold alone), overlay (and the raw
    probability, SEG recording `seg_identity`, SR of the masses referencing that SEG); its predictions.csv row."""
    item = loaded.item
    rule = rule if isinstance(rule, PostProcessing) else PostProcessing(float(rule))
    mask, prob, grid = output_mask(loaded, prob_model, rule)
    layout = PredictionLayout(out)
    write_png(layout.mask(item.id), mask)
    if save_prob:
        write_png(layout.prob(item.id), np.round(np.clip(prob, 0.0, 1.0) * 65535).astype(np.uint16))
    write_png(layout.overlay(item.id), overlay_image(loaded.display, mask, loaded.reference))
    if (dicom_seg or dicom_sr) and loaded.dataset is not None:
        write_dicom_objects(loaded.dataset, mask, prob, (layout.seg(item.id), layout.sr(item.id) if dicom_sr else None),
                            seg_identity)
    return {"id": item.id, "input": item.input, "mask": layout.mask(item.id).relative_to(out).as_posix(),
            "height": mask.shape[0], "width": mask.shape[1], "grid": grid}
