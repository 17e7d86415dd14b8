"""The masses of a predicted mask, measured: what a radiologist reads off a finding.

Why: a Structured Report (`mammoseg.dicom.sr`) and the viewer both report each mass — a
connected component of the mask (8-connected) — with its area, maximum diameter, centroid,
bounding box and the ensemble's mean probability inside it. One pure function computes
them, so every consumer reports the same numbers.

- **area**: the component's pixel count; in mm² with the (row, column) spacing.
- **maximum diameter** (max Feret diameter): the largest distance between two points of the
  component's outer contour (pixel centres), in pixels and, scaled by the row and column
  spacing separately (anisotropic pixels), in mm. A one-pixel mass has diameter 0.
- **centroid**: the mean (row, column) of its pixels; **bounding box**: (top, left, height,
  width) in pixels.
- **mean probability**: the mean of the probability map over the component's pixels.

Masses are numbered 1..n from the largest area down (ties in raster order of their first pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Mass:
    """One connected component of a mask, measured (module docstring)."""

    number: int
    area_px: int
    max_diameter_px: float
    centroid: tuple[float, float]  # (row, column), pixels
    bbox: tuple[int, int, int, int]  # (top, left, height, width), pixels
    area_mm2: float | None = None  # None without a pixel spacing
    max_diameter_mm: float | None = None
    mean_probability: float | None = None  # None without a probability map


def find_masses(
    mask: np.ndarray, spacing: tuple[float, float] | None = None, probability: np.ndarray | None = None
) -> list[Mass]:
    """The masses of `mask` (nonzero = mass), measured; `spacing` (row, column) in mm per pixel,
    `probability` on the mask's grid. An empty mask has none."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if binary.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {binary.shape}")
    if probability is not None and np.shape(probability) != binary.shape:
        raise ValueError(f"probability shape {np.shape(probability)} != mask shape {binary.shape}")
    if spacing is not None and not (len(spacing) == 2 and all(np.isfinite(s) and s > 0 for s in spacing)):
        raise ValueError(f"spacing must be two positive numbers of mm, got {spacing!r}")
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    order = sorted(range(1, count), key=lambda k: -int(stats[k, cv2.CC_STAT_AREA]))  # stable: raster order ties
    return [_measure(number, labels == k, stats[k], centroids[k], spacing, probability)
            for number, k in enumerate(order, start=1)]


def _measure(number: int, component: np.ndarray, stat: np.ndarray, centroid: np.ndarray,
             spacing: tuple[float, float] | None, probability: np.ndarray | None) -> Mass:
    area = int(stat[cv2.CC_STAT_AREA])
    top, left = int(stat[cv2.CC_STAT_TOP]), int(stat[cv2.CC_STAT_LEFT])
    height, width = int(stat[cv2.CC_STAT_HEIGHT]), int(stat[cv2.CC_STAT_WIDTH])
    hull = _hull_points(component[top:top + height, left:left + width])  # (row, col), relative to the box
    row_mm, col_mm = spacing if spacing is not None else (None, None)
    return Mass(
        number=number, area_px=area, max_diameter_px=max_feret(hull), centroid=(float(centroid[1]), float(centroid[0])),
        bbox=(top, left, height, width),
        area_mm2=area * row_mm * col_mm if spacing is not None else None,
        max_diameter_mm=max_feret(hull, (row_mm, col_mm)) if spacing is not None else None,
        mean_probability=float(np.mean(probability[component], dtype=np.float64)) if probability is not None else None,
    )


def _hull_points(component: np.ndarray) -> np.ndarray:
    """(row, column) points of the convex hull of the component's outer contour: the diameter's candidates."""
    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate([c.reshape(-1, 2) for c in contours])
    hull = cv2.convexHull(points).reshape(-1, 2)
    return hull[:, ::-1].astype(np.float64)  # OpenCV gives (x, y)


def max_feret(points_rc: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """The largest distance between two of the (row, column) points, rows and columns scaled by `spacing`.

    The convex hull of the scaled points is the scaled hull, so the hull's points suffice.
    """
    scaled = np.asarray(points_rc, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(scaled) < 2:
        return 0.0
    differences = scaled[:, None, :] - scaled[None, :, :]
    return float(np.sqrt((differences ** 2).sum(axis=-1).max()))
