"""Drawing masses into a phantom: where they go, their density profile, and their masks.

A mass is denser and more homogeneous than the tissue it sits in; its mask is its profile
thresholded at half-maximum (the largest connected part), so mask and visible mass agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_HOMOGENISE = 0.9  # how far a mass's interior is smoothed: masses are more uniform than tissue


@dataclass(frozen=True)
class MassSpec:
    """One mass, independent of where it is drawn (so both views show the same mass).

    `diameter_px` is the nominal diameter in pixels (see the module's size rule);
    `contrast` the density added at the core (image scale 0..1, tissue ~0.3-0.6);
    `edge` the width of the sigmoid margin as a fraction of the radius (small: circumscribed,
    large: ill-defined); `harmonics` (k, amplitude, phase) shape the outline; `spicules`
    (angle, length / radius, width px) are thin radiating lines; `depth` the preferred
    distance from the chest wall as a fraction of the breast's depth (None: anywhere).
    """

    kind: str
    diameter_mm: float
    diameter_px: float
    contrast: float
    edge: float
    margin: str
    harmonics: tuple[tuple[int, float, float], ...] = ()
    spicules: tuple[tuple[float, float, float], ...] = ()
    angle: float = 0.0
    depth: float | None = None

    @property
    def extent_px(self) -> float:
        """Radius (px) that contains the mass core, margins included."""
        radius = self.diameter_px / 2
        return radius * (1 + sum(abs(a) for _, a, _ in self.harmonics)) * (1 + 4 * self.edge)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


def _mass_profile(mass: MassSpec, half: int) -> np.ndarray:
    """Mass density profile (max ~1) on a (2*half+1)^2 window centred on the mass."""
    coords = np.arange(-half, half + 1, dtype=np.float32)
    dy = coords[:, None]
    dx = coords[None, :]
    rho = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx) - np.float32(mass.angle)
    radius = np.full_like(theta, np.float32(mass.diameter_px / 2))
    for k, amp, phase in mass.harmonics:
        radius *= 1.0 + np.float32(amp) * np.cos(k * theta + np.float32(phase))
    core = sigmoid((1.0 - rho / radius) / np.float32(mass.edge))
    profile = core
    r0 = mass.diameter_px / 2
    for angle, length, width in mass.spicules:
        a = angle + mass.angle
        ux, uy = math.cos(a), math.sin(a)
        start = 0.8 * r0
        along = dx * np.float32(ux) + dy * np.float32(uy) - np.float32(start)
        across = np.abs(-dx * np.float32(uy) + dy * np.float32(ux))
        t = along / np.float32(length * r0 + r0 * 0.2)
        taper = np.clip(1.0 - t, 0.0, 1.0) * (along >= 0)
        spicule = (0.95 * taper * np.exp(-((across / np.float32(width)) ** 2))).astype(np.float32)
        profile = np.maximum(profile, spicule)
    return profile


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def _place_mass(
    rng: np.random.Generator,
    allowed: np.ndarray,
    depth_px: float | None,
    a_x: float,
) -> tuple[int, int]:
    """A (row, col) centre among `allowed` pixels, near `depth_px` from the chest wall if given."""
    h, w = allowed.shape
    stride = max(1, int(min(h, w) // 200))
    grid = allowed[::stride, ::stride]
    rows, cols = np.nonzero(grid)
    if rows.size == 0:
        raise ValueError("no room in the breast for the mass")
    rows, cols = rows * stride, cols * stride
    if depth_px is not None:
        near = np.abs(cols - depth_px) < 0.12 * a_x
        if near.any():
            rows, cols = rows[near], cols[near]
    pick = int(rng.integers(rows.size))
    return int(rows[pick]), int(cols[pick])


def _draw_mass(rng: np.random.Generator, image: np.ndarray, region: np.ndarray, spec: MassSpec, allowed: np.ndarray,
               a_x: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Draw one mass at a place drawn from `allowed`; (its mask, its centre)."""
    h, w = image.shape
    depth_px = None if spec.depth is None else spec.depth * a_x
    cy, cx = _place_mass(rng, allowed, depth_px, a_x)
    reach = spec.extent_px
    for _, length, width in spec.spicules:
        reach = max(reach, spec.diameter_px / 2 * (1.0 + length) + 2 * width)
    half = int(math.ceil(reach + 3))
    profile = _mass_profile(spec, half)
    full_mask = np.zeros((h, w), dtype=bool)
    y0, x0 = cy - half, cx - half
    sy0, sx0 = max(0, -y0), max(0, -x0)
    ty0, tx0 = max(0, y0), max(0, x0)
    ty1, tx1 = min(h, y0 + 2 * half + 1), min(w, x0 + 2 * half + 1)
    prof = profile[sy0:sy0 + ty1 - ty0, sx0:sx0 + tx1 - tx0] * region[ty0:ty1, tx0:tx1]
    patch = image[ty0:ty1, tx0:tx1]
    # A mass is denser and more homogeneous than the tissue it sits in.
    smooth = cv2.GaussianBlur(patch, (0, 0), sigmaX=max(1.0, spec.diameter_px / 6))
    patch -= np.float32(_HOMOGENISE) * prof * (patch - smooth)
    patch += np.float32(spec.contrast) * prof
    local = _largest_component(profile >= 0.5 * float(profile.max()))
    full_mask[ty0:ty1, tx0:tx1] = local[sy0:sy0 + ty1 - ty0, sx0:sx0 + tx1 - tx0] & region[ty0:ty1, tx0:tx1]
    return full_mask, (cy, cx)


def draw_masses(rng: np.random.Generator, image: np.ndarray, region: np.ndarray, pectoral_free: np.ndarray,
            masses: Sequence[MassSpec], a_x: float) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Masses placed well inside the breast, off the pectoral muscle and off each other. The image
    edges count as boundaries here, so no mass is cut off by the chest-wall edge."""
    h, w = image.shape
    size = max(h, w)
    bordered = cv2.copyMakeBorder(pectoral_free.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    room = cv2.distanceTransform(bordered, cv2.DIST_L2, 5)[1:-1, 1:-1]
    mass_masks: list[np.ndarray] = []
    centers: list[tuple[int, int]] = []
    taken = np.zeros((h, w), dtype=bool)
    for spec in masses:
        extent = spec.extent_px
        allowed = (room > extent * 1.1 + 0.02 * size) & ~taken
        if not allowed.any():  # a small breast: take the roomiest free spots
            allowed = (room >= room.max() * 0.9) & ~taken
        if not allowed.any():
            allowed = room >= room.max() * 0.9
        mask, (cy, cx) = _draw_mass(rng, image, region, spec, allowed, a_x)
        mass_masks.append(mask)
        centers.append((cy, cx))
        keep_out = int(extent * 2.2 + 4)
        taken[max(0, cy - keep_out):cy + keep_out + 1, max(0, cx - keep_out):cx + keep_out + 1] = True
    return mass_masks, centers
