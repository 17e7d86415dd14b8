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
sensitivity is that of the sweep point with the largest FP/image not above the operating point
(ties: the higher sensitivity). When every point has more false positives the sensitivity is 0;
when the curve ends below the operating point (even the lowest threshold has fewer false
positives) it is the sensitivity of that last point. Their mean is the ``mean_sensitivity``, the
CPM-style summary.

Speed: per image the reference lesions are labelled once, and only the bounding box of
``prob ≥ lowest threshold`` is relabelled, a box that shrinks with every threshold to the
components still present; a level no pixel reaches is not relabelled at all. The intersections
are counted over the reference pixels only. Everything stays on the grid the masks are scored on,
so the result is exact, not an approximation on a coarser grid.
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
    n_ref, ref_labels, ref_stats = _labels(ref)
    ref_area = ref_stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
    ref_rows, ref_cols = np.nonzero(ref_labels)
    ref_of_pixel = ref_labels[ref_rows, ref_cols].astype(np.int64)
    detected = np.zeros(len(thresholds), dtype=np.int64)
    false_pos = np.zeros(len(thresholds), dtype=np.int64)

    box = (0, prob.shape[0], 0, prob.shape[1])  # rows r0:r1, cols c0:c1 that hold every pixel ≥ t
    levels = np.searchsorted(np.asarray(thresholds, dtype=np.float64), prob.ravel(), side="right")
    present = np.bincount(levels, minlength=len(thresholds) + 1)  # pixels whose highest threshold is i - 1
    reached = np.cumsum(present[::-1])[::-1][1:]  # reached[i]: pixels with prob ≥ thresholds[i]
    previous = None
    for i, t in enumerate(thresholds):
        if reached[i] == 0:
            break
        if previous is not None and reached[i] == reached[i - 1]:  # the same pixels: the same counts
            detected[i], false_pos[i] = previous
            continue
        r0, r1, c0, c1 = box
        n_pred, pred_labels, stats = _labels(prob[r0:r1, c0:c1] >= np.float64(t))  # compared as searchsorted did
        previous = _match(n_pred, pred_labels, stats, (ref_rows - r0, ref_cols - c0, ref_of_pixel),
                          (n_ref, ref_area, lesion_iou))
        detected[i], false_pos[i] = previous
        box = _shrunk_box(stats, box)
    return ImageSweep(n_ref=n_ref, detected=detected, false_positives=false_pos)


def _shrunk_box(stats: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The bounding box (in image coordinates) of the components in `stats`, found inside `box`."""
    r0, _, c0, _ = box
    parts = stats[1:]
    left, top = parts[:, cv2.CC_STAT_LEFT], parts[:, cv2.CC_STAT_TOP]
    right, bottom = left + parts[:, cv2.CC_STAT_WIDTH], top + parts[:, cv2.CC_STAT_HEIGHT]
    return r0 + int(top.min()), r0 + int(bottom.max()), c0 + int(left.min()), c0 + int(right.max())


def _match(n_pred: int, pred_labels: np.ndarray, stats: np.ndarray,
           ref_pixels: tuple[np.ndarray, np.ndarray, np.ndarray],
           reference: tuple[int, np.ndarray, float]) -> tuple[int, int]:
    """(detected lesions, false positives) of the detections labelled in a box, `lesion_counts`' rule.

    `ref_pixels` are the reference pixels' rows and columns relative to the box and their lesion
    labels; `reference` is (number of lesions, each lesion's area, the IoU a detection needs)."""
    n_ref, ref_area, lesion_iou = reference
    if n_ref == 0 or n_pred == 0:
        return 0, n_pred
    rows, cols, lesion = ref_pixels
    h, w = pred_labels.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    pred_of_pixel = np.zeros(rows.shape, dtype=np.int64)
    pred_of_pixel[inside] = pred_labels[rows[inside], cols[inside]]
    joint = np.bincount(lesion * (n_pred + 1) + pred_of_pixel,
                        minlength=(n_ref + 1) * (n_pred + 1)).reshape(n_ref + 1, n_pred + 1)
    inter = joint[1:, 1:]
    area_pred = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
    iou = inter / (ref_area[:, None] + area_pred[None, :] - inter)
    hits = iou >= lesion_iou
    return int(hits.any(axis=1).sum()), int((~hits.any(axis=0)).sum())


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
    """Sensitivity at each operating point (FP/image): that of the sweep point with the largest
    FP/image not above it (ties: the higher sensitivity); 0 when every point has more."""
    fp, sens = curve.fp_per_image, curve.sensitivity
    out: dict[float, float] = {}
    for point in points:
        allowed = np.flatnonzero(fp <= point)
        if allowed.size == 0:
            out[float(point)] = 0.0
            continue
        most = fp[allowed].max()
        out[float(point)] = float(sens[allowed][fp[allowed] == most].max())
    return out


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
