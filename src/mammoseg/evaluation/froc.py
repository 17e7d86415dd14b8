"""Lesion-level FROC (free-response ROC) from probability maps: sensitivity against false positives per image.

Why: one mask threshold gives one (sensitivity, FP/image) pair; how a model trades missed masses
for false alarms shows only when the threshold sweeps. The detection rule is the one of
`mammoseg.evaluation.metrics.lesion_counts`, so the curve's point at the predict threshold is the
lesion count of ``per_image.csv``:

- at threshold t the *detections* are the connected components (8-connectivity) of ``prob ≥ t``;
- a reference lesion (a connected component of the reference mask) is *detected* when some
  detection overlaps it with IoU ≥ `lesion_iou`;
- every detection that detects no reference lesion is a *false positive*;
- sensitivity = detected lesions / all reference lesions; FP/image = false positives / all images,
  images without a mass included.

The sweep (`sweep_thresholds`): 0.01 to 0.99 in steps of 0.01, then 0.991 to 0.999 and 0.9991 to
0.9999 (a confident model's false positives often sit above 0.99, and the low FP rates need those
levels), plus any extra level asked for (`evaluate` adds the predict threshold). A probability map
saved by ``predict --save-prob`` holds ``round(prob × 65535)``; it is compared as
``value / 65535 ≥ t``, which at the default threshold 0.5 selects exactly the pixels of the
predicted mask (elsewhere a pixel within one step, 1/65535, of t may differ).

Operating points (`operating_sensitivities`): at 0.125, 0.25, 0.5, 1, 2, 4 and 8 FP/image the
sensitivity is the best of the sweep points with at most that many FP/image: the best a reader
can have within that false-positive budget. (Neither coordinate is monotone in the threshold: a
component may split as the threshold rises, adding a false positive, and at a low threshold a
lesion may merge into a halo too large to detect it.) When every point has more false positives
the sensitivity is 0. Their mean is the ``mean_sensitivity``, the CPM-style summary. The
plotted curve (`envelope`) is the same rule at every FP/image: a non-decreasing staircase.

Speed: the components of ``prob ≥ t`` are nested (raising t only shrinks or splits them), so per
image the map is labelled in full once, at the lowest threshold; after that each component is
counted for every threshold up to its lowest pixel value at once, and relabelled only inside its
own bounding box where it loses pixels. The reference lesions are labelled once. Everything stays
on the grid the masks are scored on, so the result is exact, not an approximation on a coarser grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "OPERATING_POINTS",
    "FrocCurve",
    "ImageSweep",
    "froc_curve",
    "froc_summary",
    "mean_sensitivity",
    "operating_sensitivities",
    "sweep_image",
    "sweep_thresholds",
]

#: FP/image at which the sensitivity is reported (the CPM's seven points).
OPERATING_POINTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def sweep_thresholds(extra: Iterable[float] = ()) -> tuple[float, ...]:
    """The probability thresholds of the sweep, ascending: the fixed grid above plus `extra` in (0, 1]."""
    grid = {round(k / 100, 2) for k in range(1, 100)}
    grid |= {round(0.99 + k / 1000, 3) for k in range(1, 10)}
    grid |= {round(0.999 + k / 10000, 4) for k in range(1, 10)}
    for value in extra:
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f"FROC threshold must be in (0, 1], got {value}")
        grid.add(float(value))
    return tuple(sorted(grid))


@dataclass(frozen=True)
class ImageSweep:
    """One image's lesion counts at every threshold of a sweep: `detected[i]` reference lesions
    detected and `false_positives[i]` false detections at `thresholds[i]`."""

    n_ref: int
    detected: np.ndarray
    false_positives: np.ndarray


def _labels(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of components, int32 labels, stats) with 8-connectivity, as `lesion_counts` labels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return n - 1, labels, stats


def _check_sweep_input(prob: np.ndarray, ref: np.ndarray, thresholds: Sequence[float], lesion_iou: float) -> None:
    if prob.ndim != 2 or prob.shape != ref.shape:
        raise ValueError(f"probability map {prob.shape} and reference mask {ref.shape} must be 2-D of one shape")
    if not 0.0 < lesion_iou <= 1.0:
        raise ValueError(f"lesion IoU threshold must be in (0, 1], got {lesion_iou}")
    if len(thresholds) == 0 or any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError("FROC thresholds must be a non-empty, strictly increasing sequence")


def sweep_image(prob: np.ndarray, ref: np.ndarray, thresholds: Sequence[float], lesion_iou: float = 0.2) -> ImageSweep:
    """Detected lesions and false positives of one image at every threshold (ascending) of the sweep.

    `prob` is the probability map (float in [0, 1]) on the reference mask's grid; `ref` is the
    reference mask (non-zero = mass). At each t the counts equal
    ``lesion_counts(prob >= t, ref, lesion_iou)``.
    """
    prob, ref = np.asarray(prob), np.asarray(ref) != 0
    _check_sweep_input(prob, ref, thresholds, lesion_iou)
    if not np.issubdtype(prob.dtype, np.floating):
        prob = prob.astype(np.float64)
    # `prob >= t` with a Python float t compares in prob's own precision: so does the sweep.
    levels = np.asarray(thresholds, dtype=np.float64).astype(prob.dtype)
    n_ref, ref_labels, ref_stats = _labels(ref)
    sweep = _Sweep(prob, levels, ref_labels, ref_stats[1:, cv2.CC_STAT_AREA].astype(np.int64), lesion_iou)
    whole = prob >= levels[0]
    sweep.split(0, 0, whole, 0)
    while sweep.pending:
        sweep.follow(*sweep.pending.pop())
    detected = sweep.hit[1:].sum(axis=0) if n_ref else np.zeros(len(levels), dtype=np.int64)
    return ImageSweep(n_ref=n_ref, detected=detected.astype(np.int64), false_positives=np.cumsum(sweep.fp_change)[:-1])


class _Sweep:
    """The walk down the nested components of ``prob ≥ t`` as t rises.

    A component found at threshold index i keeps all its pixels up to the last threshold not above
    its lowest value; over that range it counts once (a detection of the lesions it overlaps with
    IoU ≥ `lesion_iou`, else a false positive), and only then is it relabelled, inside its own
    bounding box, into the components it splits or shrinks into. So a pixel is relabelled only
    where something changes, and the rest of the image is never looked at again."""

    def __init__(self, prob: np.ndarray, levels: np.ndarray, ref_labels: np.ndarray, ref_area: np.ndarray,
                 lesion_iou: float) -> None:
        self.prob, self.levels, self.ref_labels, self.ref_area = prob, levels, ref_labels, ref_area
        self.lesion_iou = lesion_iou
        self.hit = np.zeros((ref_area.size + 1, levels.size), dtype=bool)  # [lesion, threshold]; row 0 unused
        self.fp_change = np.zeros(levels.size + 1, dtype=np.int64)  # false positives start (+1) / stop (-1)
        self.pending: list[tuple[int, int, np.ndarray, int]] = []  # (row, column, component mask, threshold index)

    def split(self, r0: int, c0: int, mask: np.ndarray, index: int) -> None:
        """Queue the components of `mask` (a box at row r0, column c0) as present from threshold `index`."""
        n, labels, stats = _labels(mask)
        for k in range(1, n + 1):
            x, y, w, h = (int(v) for v in stats[k, :4])
            self.pending.append((r0 + y, c0 + x, labels[y:y + h, x:x + w] == k, index))

    def follow(self, r0: int, c0: int, mask: np.ndarray, index: int) -> None:
        """Count one component over the thresholds it keeps all its pixels, then split it at the next."""
        h, w = mask.shape
        crop = self.prob[r0:r0 + h, c0:c0 + w]
        values = crop[mask]
        end = int(np.searchsorted(self.levels, values.min(), side="right"))  # thresholds ≤ its lowest value
        lesion = self.ref_labels[r0:r0 + h, c0:c0 + w][mask]
        inter = np.bincount(lesion, minlength=self.ref_area.size + 1)[1:]
        iou = inter / (self.ref_area + values.size - inter)
        hits = np.flatnonzero(iou >= self.lesion_iou) + 1
        if hits.size:
            self.hit[hits, index:end] = True
        else:
            self.fp_change[index] += 1
            self.fp_change[end] -= 1
        if end < self.levels.size:
            self.split(r0, c0, mask & (crop >= self.levels[end]), end)


@dataclass(frozen=True)
class FrocCurve:
    """The FROC of a set of images: per threshold (ascending) the sensitivity and FP/image, with the
    totals they are fractions of."""

    thresholds: tuple[float, ...]
    detected: np.ndarray
    false_positives: np.ndarray
    n_ref: int
    n_images: int

    @property
    def sensitivity(self) -> np.ndarray:
        return self.detected / self.n_ref

    @property
    def fp_per_image(self) -> np.ndarray:
        return self.false_positives / self.n_images

    def rows(self) -> list[dict[str, object]]:
        """One dict per threshold (the FROC CSV's rows), numbers unformatted."""
        return [{"threshold": t, "sensitivity": float(s), "fp_per_image": float(f), "n_detected": int(d),
                 "n_false_positives": int(p)}
                for t, s, f, d, p in zip(self.thresholds, self.sensitivity, self.fp_per_image, self.detected,
                                         self.false_positives)]


def froc_curve(sweeps: Sequence[ImageSweep], thresholds: Sequence[float]) -> FrocCurve:
    """The FROC of images swept with the same `thresholds`: their counts summed.

    Needs at least one reference lesion (the sensitivity is undefined without one)."""
    if not sweeps:
        raise ValueError("FROC: no images")
    n_ref = sum(s.n_ref for s in sweeps)
    if n_ref == 0:
        raise ValueError("FROC: no reference lesions, so no sensitivity")
    if any(s.detected.shape != (len(thresholds),) for s in sweeps):
        raise ValueError("FROC: every image must be swept with the same thresholds")
    return FrocCurve(tuple(float(t) for t in thresholds),
                     np.sum([s.detected for s in sweeps], axis=0),
                     np.sum([s.false_positives for s in sweeps], axis=0), int(n_ref), len(sweeps))


def operating_sensitivities(curve: FrocCurve, points: Sequence[float] = OPERATING_POINTS) -> dict[float, float]:
    """Sensitivity at each operating point (FP/image): the best of the sweep points with at most that
    many FP/image; 0 when every point has more."""
    fp, sens = curve.fp_per_image, curve.sensitivity
    return {float(point): float(sens[fp <= point].max(initial=0.0)) for point in points}


def envelope(fp_per_image: Sequence[float], sensitivity: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The FROC as plotted: each distinct FP/image of the sweep (ascending) with the best sensitivity
    of the points at or below it — the operating-point rule everywhere, a non-decreasing staircase."""
    fp, sens = np.asarray(fp_per_image, np.float64), np.asarray(sensitivity, np.float64)
    order = np.argsort(fp, kind="stable")
    best = np.maximum.accumulate(sens[order]) if sens.size else sens
    levels, last = np.unique(fp[order][::-1], return_index=True)  # the last point of each FP level
    return levels, best[::-1][last]


def mean_sensitivity(by_point: dict[float, float]) -> float:
    """The mean of the operating points' sensitivities (the CPM-style one-number summary)."""
    if not by_point:
        raise ValueError("mean sensitivity: no operating points")
    return float(np.mean(list(by_point.values())))


def froc_summary(curve: FrocCurve, lesion_iou: float, predict_threshold: float | None = None) -> dict[str, object]:
    """summary.json's ``froc``: sensitivity at each operating point (keys "0.125" … "8"), their mean,
    the point at the predict threshold (when it was swept), the lesion IoU and the counts."""
    by_point = operating_sensitivities(curve)
    at_predict = None
    if predict_threshold is not None and float(predict_threshold) in curve.thresholds:
        i = curve.thresholds.index(float(predict_threshold))
        at_predict = {"threshold": float(predict_threshold), "sensitivity": float(curve.sensitivity[i]),
                      "fp_per_image": float(curve.fp_per_image[i])}
    return {
        "operating_points": {f"{point:g}": sens for point, sens in by_point.items()},
        "mean_sensitivity": mean_sensitivity(by_point),
        "at_predict_threshold": at_predict,
        "lesion_iou_threshold": float(lesion_iou),
        "n_ref_lesions": curve.n_ref,
        "n_images": curve.n_images,
        "n_thresholds": len(curve.thresholds),
    }
