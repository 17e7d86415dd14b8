"""Segmentation metrics: per-image Dice and IoU, lesion-level detection, and summaries.

Empty-mask convention (both papers' "per-image mean" depend on it, so it is fixed here):

- reference and prediction both empty: Dice = IoU = 1 (the model correctly found nothing);
- exactly one of them empty: Dice = IoU = 0.

Summaries report the mean and the *sample* standard deviation (ddof = 1), which is what
papers mean by "mean ± SD" — the paper's Table 2 included — and a percentile-bootstrap 95 %
confidence interval of the mean Dice. The bootstrap resamples *patients* (all views of a
patient together) when every image names its patient: a patient's four views are not four
independent draws, and resampling them one by one makes the interval too narrow. Without
patient ids it resamples images, and the summary says which (`ci_unit`).
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


def _bootstrap_means(values: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator,
                     n_boot: int) -> np.ndarray:
    """`n_boot` bootstrap means of `values`: images drawn with replacement, or, with `groups`
    (one cluster index 0..G-1 per value), whole clusters drawn with replacement, each mean taken
    over all the images of the drawn clusters."""
    if groups is not None:
        sums, counts = np.bincount(groups, weights=values), np.bincount(groups).astype(np.float64)
    size = values.size if groups is None else sums.size
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // size)  # bound memory for large evaluations
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, size, size=(stop - start, size))
        if groups is None:
            means[start:stop] = values[idx].mean(axis=1)
        else:
            means[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return means


def _cluster_index(patients: Sequence[str] | None, n: int) -> np.ndarray | None:
    """Each image's patient as 0..G-1 (patients in sorted order), or None when any image lacks one."""
    if patients is None:
        return None
    ids = [str(p).strip() for p in patients]
    if len(ids) != n:
        raise ValueError(f"summarise: {n} Dice values but {len(ids)} patient ids")
    if not all(ids):
        return None
    return np.unique(np.asarray(ids), return_inverse=True)[1].reshape(-1)


def summarise(
    dices: Sequence[float],
    ious: Sequence[float],
    seed: int = 0,
    n_boot: int = 2000,
    patients: Sequence[str] | None = None,
) -> dict[str, object]:
    """n, mean, sample SD (ddof=1), median of Dice and IoU, and a 95 % bootstrap CI of the mean Dice.

    The CI is the percentile bootstrap with `n_boot` resamples, seeded so the same numbers give
    the same interval. With `patients` (one id per image, none empty) it resamples patients, all
    of a patient's images together (`ci_unit` "patient"); otherwise images (`ci_unit` "image").
    SD is None for a single image.
    """
    d = np.asarray(dices, dtype=np.float64)
    j = np.asarray(ious, dtype=np.float64)
    if d.size == 0:
        raise ValueError("summarise: no values (no images were evaluated)")
    if d.shape != j.shape:
        raise ValueError(f"summarise: {d.size} Dice values but {j.size} IoU values")
    if n_boot < 1:
        raise ValueError(f"summarise: n_boot must be >= 1, got {n_boot}")
    groups = _cluster_index(patients, d.size)
    means = _bootstrap_means(d, groups, np.random.default_rng(seed), n_boot)
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
        "ci_unit": "image" if groups is None else "patient",
        "n_patients": None if groups is None else int(groups.max()) + 1,
    }


def fmt_mean_sd(mean: float, sd: float | None) -> str:
    """'0.7677 ± 0.2134' (or '0.7677 ± n/a' for a single image), as the paper writes it."""
    return f"{mean:.4f} ± {'n/a' if sd is None or math.isnan(sd) else f'{sd:.4f}'}"
