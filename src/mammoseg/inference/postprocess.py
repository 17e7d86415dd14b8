"""Post-processing of the fold ensemble's probability: the threshold and two connected-component rules.

Why: most errors of a trained run are mass-free images with one small false-positive blob
(Dice 0). As nnU-Net does, the rules are chosen on the cross-validation's own out-of-fold
predictions (`mammoseg.inference.oof`) and saved in the run folder (`RunLayout.postprocessing`);
predict, `Segmenter`, the DICOM node and bundles then apply them.

A rule (`PostProcessing`) is: the probability threshold; a minimum component area in pixels of
the model grid (the prepared image, `image_size`²), smaller components are dropped; and whether
only the most probable component (highest maximum probability) is kept. Components are 8-connected
regions of `probability >= threshold` on the model grid, where the rules were chosen. Applying a
rule sets the probability of each dropped component's pixels to 0 (`drop_components`) *before* the
probability is mapped back onto an input's own grid and thresholded there, so a DICOM (original
grid) and its prepared image get the same decision; the kept components are left exactly as they
were. The default rule (0.5, no minimum area, every component) changes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mammoseg.layouts import RunLayout

DEFAULT_THRESHOLD = 0.5
#: Component connectivity (as `mammoseg.evaluation.metrics` counts lesions).
CONNECTIVITY = 8


@dataclass(frozen=True)
class PostProcessing:
    """What turns a model-grid probability into a mask: threshold, minimum component area (model-grid
    pixels) and whether only the most probable component is kept."""

    threshold: float = DEFAULT_THRESHOLD
    min_area: int = 0
    keep_most_probable: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= float(self.threshold) <= 1.0):
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold!r}")
        if isinstance(self.min_area, bool) or not isinstance(self.min_area, int) or self.min_area < 0:
            raise ValueError(f"min_area must be a whole number of pixels >= 0, got {self.min_area!r}")
        if not isinstance(self.keep_most_probable, bool):
            raise ValueError(f"keep_most_probable must be true or false, got {self.keep_most_probable!r}")

    @property
    def filters_components(self) -> bool:
        """Whether the rule can drop a component (else thresholding alone decides the mask)."""
        return self.min_area > 1 or self.keep_most_probable

    def components(self) -> dict[str, Any]:
        """The component rules alone (what predict.json records beside its threshold)."""
        return {"min_area": self.min_area, "keep_most_probable": self.keep_most_probable}

    def describe(self) -> str:
        """One line for people: 'threshold 0.45, minimum area 16 px, most probable component only'."""
        parts = [f"threshold {self.threshold:g}",
                 f"minimum area {self.min_area} px" if self.min_area > 1 else "no minimum area",
                 "most probable component only" if self.keep_most_probable else "every component"]
        return ", ".join(parts)


def kept_components(areas: np.ndarray, peaks: np.ndarray, min_area: int, keep_most_probable: bool) -> np.ndarray:
    """Which components a rule keeps (bool per component), from their areas and maximum probabilities.

    Components smaller than `min_area` go first; of the rest, `keep_most_probable` keeps the one with
    the highest maximum probability; on a tie the larger one (a confident model's peaks are often
    exactly 1.0 in float32, so ties are common), then the first in label order (top-left first).
    """
    areas = np.asarray(areas)
    keep = areas >= min_area
    if keep_most_probable and keep.any():
        candidates = np.flatnonzero(keep)
        best = candidates[np.lexsort((-areas[candidates], -np.asarray(peaks)[candidates]))[0]]
        keep = np.zeros_like(keep)
        keep[best] = True
    return keep


def label_components(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (H, W) int32 with 0 = background and component c labelled c + 1, area per component,
    maximum probability per component) of `prob >= threshold`."""
    above = (prob >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=CONNECTIVITY, ltype=cv2.CV_32S)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
    peaks = np.zeros(n, np.float64)
    inside = labels > 0
    np.maximum.at(peaks, labels[inside], prob[inside])
    return labels, areas, peaks[1:]


def drop_components(prob: np.ndarray, rule: PostProcessing) -> np.ndarray:
    """The model-grid probability with every component the rule drops set to 0 (the input itself when
    the rule drops nothing); thresholding the result at `rule.threshold` gives the post-processed mask."""
    if not rule.filters_components:
        return prob
    labels, areas, peaks = label_components(prob, rule.threshold)
    keep = kept_components(areas, peaks, rule.min_area, rule.keep_most_probable)
    if keep.all():
        return prob
    dropped = np.concatenate([[False], ~keep])[labels]
    out = np.array(prob, copy=True)
    out[dropped] = 0
    return out


def postprocessed_mask(prob: np.ndarray, rule: PostProcessing) -> np.ndarray:
    """uint8 0/255 mask of a model-grid probability under `rule`."""
    return np.where(drop_components(prob, rule) >= rule.threshold, 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------- the run's saved choice


class StalePostProcessing(ValueError):
    """postprocessing.json was chosen for other fold models than the run holds now."""


def rule_from_record(record: Mapping[str, Any], where: str) -> PostProcessing:
    """The rule a postprocessing.json mapping records; ValueError naming `where` when it is malformed."""
    try:
        threshold, min_area, keep = record["threshold"], record["min_area"], record["keep_most_probable"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold {threshold!r} is not a number")
        return PostProcessing(float(threshold), min_area, keep)
    except KeyError as exc:
        raise ValueError(f"{where}: no {exc.args[0]!r}; it is not a postprocessing.json mammoseg wrote") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def read_record(layout: RunLayout) -> dict[str, Any] | None:
    """The run's postprocessing.json as a mapping (None when the run has none: runs trained before it existed)."""
    path = layout.postprocessing
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def run_postprocessing(layout: RunLayout, run_id: str) -> PostProcessing | None:
    """The post-processing chosen for the run whose fold models have id `run_id` (`run_identity.run_id`);
    None when the run has no postprocessing.json; `StalePostProcessing` when it was chosen for other
    fold models (a fold retrained since), so no mask is made with rules that belong to other models."""
    record = read_record(layout)
    if record is None:
        return None
    if record.get("run_id") != run_id:
        raise StalePostProcessing(
            f"{layout.postprocessing}: chosen for other fold models (run id {record.get('run_id')!r}, the run's is "
            f"{run_id}); run `mammoseg train` again on the run to choose it anew, or predict with --no-postprocessing")
    return rule_from_record(record, str(layout.postprocessing))
