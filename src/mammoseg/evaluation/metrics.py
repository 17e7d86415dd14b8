"""Segmentation metrics: per-image Dice and IoU, lesion-level detection, and summaries.

Empty-mask convention (both papers' "per-image mean" depend on it, so it is fixed here):

- reference and prediction both empty: Dice = IoU = 1 (the model correctly found nothing);
- exactly one of them empty: Dice = IoU = 0.

Summaries report the mean and the *sample* standard deviation (ddof = 1), which is what
papers mean by "mean ± SD" — the paper's Table 2 included — and a percentile-bootstrap 95 %
confidence interval of the mean Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["dice_iou", "fmt_mean_sd", "lesion_counts", "summarise"]


def _as_bool(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D mask, got shape {mask.shape}")
    return mask != 0


def dice_iou(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two masks (non-zero = mass), with the empty-mask convention above."""
    p, r = _as_bool(pred, "prediction"), _as_bool(ref, "reference")
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    inter = int(np.count_nonzero(p & r))
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    if n_p == 0 and n_r == 0:
        return 1.0, 1.0
    union = n_p + n_r - inter
    return 2.0 * inter / (n_p + n_r), inter / union


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, int32 label image) with 8-connectivity; label 0 is background."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return n - 1, labels


def lesion_counts(pred: np.ndarray, ref: np.ndarray, iou_threshold: float = 0.2) -> dict[str, int]:
    """Lesion-level detection by connected components (8-connectivity).

    A reference lesion is *detected* when some predicted component overlaps it with
    IoU ≥ `iou_threshold`; a predicted component that detects no reference lesion is a
    *false positive*. Returns ``n_ref``, ``n_detected`` and ``n_false_positive``.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"lesion IoU threshold must be in (0, 1], got {iou_threshold}")
    p, r = _as_bool(pred, "prediction"), _as_bool(ref, "reference")
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    n_ref, ref_labels = _components(r)
    n_pred, pred_labels = _components(p)
    if n_ref == 0 or n_pred == 0:
        return {"n_ref": n_ref, "n_detected": 0, "n_false_positive": n_pred}
    # Joint histogram of (reference label, predicted label): the intersection of every pair.
    joint = np.bincount(
        (ref_labels.ravel().astype(np.int64) * (n_pred + 1) + pred_labels.ravel()),
        minlength=(n_ref + 1) * (n_pred + 1),
    ).reshape(n_ref + 1, n_pred + 1)
    area_ref = joint[1:, :].sum(axis=1)  # (n_ref,)
    area_pred = joint[:, 1:].sum(axis=0)  # (n_pred,)
    inter = joint[1:, 1:]
    iou = inter / (area_ref[:, None] + area_pred[None, :] - inter)
    hits = iou >= iou_threshold
    return {
        "n_ref": n_ref,
        "n_detected": int(hits.any(axis=1).sum()),
        "n_false_positive": int((~hits.any(axis=0)).sum()),
    }


def _sd(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if values.size > 1 else None


def summarise(
    dices: Sequence[float],
    ious: Sequence[float],
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, object]:
    """n, mean, sample SD (ddof=1), median of Dice and IoU, and a 95 % bootstrap CI of the mean Dice.

    The CI is the percentile bootstrap: `n_boot` resamples of the images with replacement,
    seeded so the same numbers give the same interval. SD is None for a single image.
    """
    d = np.asarray(dices, dtype=np.float64)
    j = np.asarray(ious, dtype=np.float64)
    if d.size == 0:
        raise ValueError("summarise: no values (no images were evaluated)")
    if d.shape != j.shape:
        raise ValueError(f"summarise: {d.size} Dice values but {j.size} IoU values")
    if n_boot < 1:
        raise ValueError(f"summarise: n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // d.size)  # bound memory for large evaluations
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, d.size, size=(stop - start, d.size))
        means[start:stop] = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "n": int(d.size),
        "dice_mean": float(d.mean()),
        "dice_sd": _sd(d),
        "dice_median": float(np.median(d)),
        "dice_ci95": [float(lo), float(hi)],
        "iou_mean": float(j.mean()),
        "iou_sd": _sd(j),
        "iou_median": float(np.median(j)),
        "bootstrap_samples": int(n_boot),
        "bootstrap_seed": int(seed),
    }


def fmt_mean_sd(mean: float, sd: float | None) -> str:
    """'0.7677 ± 0.2134' (or '0.7677 ± n/a' for a single image), as the paper writes it."""
    return f"{mean:.4f} ± {'n/a' if sd is None or math.isnan(sd) else f'{sd:.4f}'}"
