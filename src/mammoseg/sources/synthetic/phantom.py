"""The image model of the synthetic phantoms: breast outline, tissue, pectoral muscle, masses.

The phantoms are realistic where the method cares: a breast against the chest-wall edge
with a skin line and a dark air background, fibroglandular texture with the power-law
spectrum measured on mammographic backgrounds (1/f^beta, beta ~ 3, see `texture`), a
pectoral muscle in MLO views, and low-contrast masses (round, lobulated, spiculated) with
soft or ill-defined margins. The mask of a mass is its profile thresholded at half-maximum,
so mask and visible mass agree.

Geometry conventions: a right breast (`R`) has its chest wall on the image's right edge,
a left breast (`L`) on the left edge. Both views of one breast show the same mass (same
size and shape, pixel for pixel) at a similar distance from the chest wall.

Non-breast content (`add_film_label`, `add_collimator_border`): a bright film label with
text-like strokes in the background, and a bright collimator strip along the edge away from
the chest wall, as real screening images carry; both keep clear of the breast, so no mass
lies under them.

Mass size rule: a mass of `d` mm (4-40 mm) is drawn `d / spacing` pixels across (its
physical size) but never wider than `f(d) * width` with
`f(d) = 0.03 + 0.12 * (d - 4) / 36`. At full-field shapes (e.g. 4084x3328 at 0.07 mm)
the physical size wins; at the small default shape (1000x800) the image is physically far
too small for its pixel spacing and the width rule keeps masses at 3-15 % of the width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mammoseg.sources.synthetic.masses import MassSpec, draw_masses, sigmoid
from mammoseg.sources.synthetic.texture import power_law_fields

MASS_KINDS = ("round", "lobulated", "spiculated")
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
_BACKGROUND = 0.03  # density of the air around the breast (dark)
_FAT = 0.28  # density of fatty tissue
_GLAND = 0.24  # extra density of fibroglandular tissue over fat
_GLAND_SOFTNESS = 1.0  # width of the fat/gland transition (in SDs of the texture field)
# Mass conspicuity. Tuned so a ResNet22-UNet learns the masses at 256 px but not trivially:
# with (0.06, 0.12) / 0.85 / softness 0.8 / gland 0.22 a quick 160-image run reached only
# ~0.66 holdout Dice on mass images; these values reached ~0.86 in the same quick run.
_CONTRAST = (0.09, 0.15)  # density a mass adds over the (smoothed) tissue it sits in
_PECTORAL = 0.56  # density of the pectoral muscle


# --------------------------------------------------------------------------------------
# What a phantom is made of
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreastSpec:
    """Shape and composition of one breast, shared by its CC and MLO views.

    `depth`: chest wall to nipple as a fraction of the image width; `height`: half the
    breast's extent along the chest wall as a fraction of the image height; `center`: row
    of the widest point (fraction of height); `density`: fibroglandular fraction (0..1);
    `wobble`: (k, amplitude, phase) irregularities of the outline.
    """

    depth: float
    height: float
    center: float
    density: float
    wobble: tuple[tuple[int, float, float], ...] = ()


@dataclass
class Phantom:
    """Everything `render_phantom` knows about one image (in image coordinates)."""

    image: np.ndarray  # float32 H x W, 0..1, dense tissue bright
    mask: np.ndarray  # bool H x W, union of the masses
    mass_masks: list[np.ndarray]  # one bool H x W mask per mass, in the order given
    breast: np.ndarray  # bool H x W breast region
    chest_side: str  # "left" | "right"
    mass_centers: list[tuple[int, int]]  # (row, col) per mass
    label_box: tuple[int, int, int, int] | None = None  # film label (row0, row1, col0, col1), `add_film_label`
    border_box: tuple[int, int, int, int] | None = None  # collimator border, `add_collimator_border`


def mass_diameter_px(diameter_mm: float, width: int, spacing_mm: float) -> float:
    """Pixels across for a `diameter_mm` mass: physical size, capped at 3-15 % of the width."""
    fraction = 0.03 + 0.12 * (float(np.clip(diameter_mm, 4, 40)) - 4) / 36
    return float(min(diameter_mm / spacing_mm, fraction * width))


def random_mass(
    rng: np.random.Generator,
    width: int,
    spacing_mm: float = 0.085,
    kind: str | None = None,
    depth: float | None = None,
) -> MassSpec:
    """A random mass for an image `width` pixels wide (diameter 4-40 mm, mostly mid-sized)."""
    kind = kind or str(rng.choice(MASS_KINDS, p=(0.35, 0.35, 0.30)))
    if kind not in MASS_KINDS:
        raise ValueError(f"unknown mass kind {kind!r}; expected one of {', '.join(MASS_KINDS)}")
    diameter_mm = float(4 + 36 * rng.beta(2.0, 2.2))
    diameter_px = max(mass_diameter_px(diameter_mm, width, spacing_mm), 6.0)
    harmonics: list[tuple[int, float, float]] = []
    spicules: list[tuple[float, float, float]] = []
    if kind == "round":
        # Round or oval: an elongation (k=2) and a faint asymmetry.
        harmonics = [(2, float(rng.uniform(0.0, 0.15)), float(rng.uniform(0, 2 * np.pi))),
                     (3, float(rng.uniform(0.0, 0.03)), float(rng.uniform(0, 2 * np.pi)))]
        margin = str(rng.choice(["circumscribed", "ill_defined"], p=(0.6, 0.4)))
    elif kind == "lobulated":
        for k in rng.choice(np.arange(3, 7), size=int(rng.integers(2, 4)), replace=False):
            harmonics.append((int(k), float(rng.uniform(0.05, 0.13)), float(rng.uniform(0, 2 * np.pi))))
        harmonics.append((2, float(rng.uniform(0.0, 0.1)), float(rng.uniform(0, 2 * np.pi))))
        margin = str(rng.choice(["circumscribed", "ill_defined"], p=(0.5, 0.5)))
    else:
        harmonics = [(int(k), float(rng.uniform(0.02, 0.07)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 5)]
        n = int(rng.integers(8, 19))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        width_px = max(1.0, 0.045 * diameter_px / 2)
        for a in angles:
            spicules.append((float(a), float(rng.uniform(0.5, 1.3)), float(width_px * rng.uniform(0.7, 1.3))))
        margin = "spiculated"
    edge = {"circumscribed": rng.uniform(0.02, 0.05), "ill_defined": rng.uniform(0.08, 0.14),
            "spiculated": rng.uniform(0.04, 0.08)}[margin]
    return MassSpec(
        kind=kind,
        diameter_mm=round(diameter_mm, 2),
        diameter_px=diameter_px,
        contrast=float(rng.uniform(*_CONTRAST)),
        edge=float(edge),
        margin=margin,
        harmonics=tuple(harmonics),
        spicules=tuple(spicules),
        angle=float(rng.uniform(0, 2 * np.pi)),
        depth=depth,
    )


def random_breast(rng: np.random.Generator) -> BreastSpec:
    """A random breast shape and density."""
    wobble = tuple((int(k), float(rng.uniform(0.0, 0.025)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 4))
    return BreastSpec(
        depth=float(rng.uniform(0.58, 0.82)),
        height=float(rng.uniform(0.37, 0.46)),
        center=float(rng.uniform(0.46, 0.54)),
        density=float(rng.uniform(0.12, 0.55)),
        wobble=wobble,
    )


def chest_side_for(laterality: str) -> str:
    """The image edge the chest wall touches: right breasts on the right, left on the left."""
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality must be 'L' or 'R', got {laterality!r}")
    return "right" if laterality == "R" else "left"


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _breast_region(shape: tuple[int, int], breast: BreastSpec, view: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(breast region, glandular envelope 0..1, chest-wall-to-nipple px) with the chest wall at column 0.

    The outline is a semi-ellipse (the MLO's upper half runs out of the top edge, the
    axilla). Both maps are smooth, so they are computed on a grid of at most ~1024 px and
    resized; the region is the resized level set, so its edge stays smooth.
    """
    h, w = shape
    a_x = breast.depth * w
    if view == "CC":
        cy, a_up, a_dn = breast.center * h, breast.height * h, breast.height * h
    else:
        a_x *= 0.95
        cy = min(breast.center + 0.08, 0.62) * h
        a_up, a_dn = (breast.height + 0.28) * h, min(breast.height * 0.95 * h, (h - 1 - cy) * 0.97)
    step = max(1, math.ceil(max(h, w) / 1024))
    hc, wc = math.ceil(h / step), math.ceil(w / step)
    # Coarse pixel centres placed where cv2.resize (INTER_LINEAR) expects them.
    y = (np.arange(hc, dtype=np.float32)[:, None] + 0.5) * np.float32(h / hc) - 0.5 - np.float32(cy)
    x = (np.arange(wc, dtype=np.float32)[None, :] + 0.5) * np.float32(w / wc) - 0.5
    ny = np.where(y < 0, y / np.float32(a_up), y / np.float32(a_dn)).astype(np.float32)
    nx = x / np.float32(a_x)
    rho = np.sqrt(nx * nx + ny * ny)
    theta = np.arctan2(ny, nx)
    limit = np.ones_like(theta)
    for k, amp, phase in breast.wobble:
        limit += np.float32(amp) * np.cos(k * theta + np.float32(phase))
    level = (rho - limit).astype(np.float32)
    envelope = np.exp(-(((nx - 0.35) / 0.4) ** 2) - (ny / 0.65) ** 2).astype(np.float32)
    if step > 1:
        level = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)
        envelope = cv2.resize(envelope, (w, h), interpolation=cv2.INTER_LINEAR)
    return level < 0, envelope, a_x


def _pectoral(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Soft pectoral-muscle weight (0..1) in the top chest-wall corner (chest wall at column 0)."""
    h, w = shape
    pw, ph = rng.uniform(0.2, 0.34) * w, rng.uniform(0.35, 0.58) * h
    q = rng.uniform(1.0, 1.35)  # > 1: the muscle's edge bulges slightly
    x = np.arange(w, dtype=np.float32)[None, :] / np.float32(pw)
    y = np.arange(h, dtype=np.float32)[:, None] / np.float32(ph)
    s = x ** np.float32(q) + y ** np.float32(q)
    softness = np.float32(max(1.5, 0.004 * max(h, w)) / min(pw, ph))
    return sigmoid((1.0 - s) / softness)


def _tissue(rng: np.random.Generator, shape: tuple[int, int], breast: BreastSpec, envelope: np.ndarray,
            region: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image of breast tissue with thickness fall-off and skin line, fine texture field)."""
    size = max(shape)
    # Fibroglandular tissue: a thresholded 1/f^3 field, denser behind the nipple region.
    glands, fine = power_law_fields(rng, shape, beta=3.0)
    glands += np.float32(1.8) * (envelope - np.float32(0.5))
    threshold = np.float32(1.25 - 3.2 * breast.density)
    tissue = np.float32(_FAT) + np.float32(_GLAND) * sigmoid((glands - threshold) / np.float32(_GLAND_SOFTNESS))
    del glands
    tissue += np.float32(0.025) * fine
    # Compressed thickness falls off towards the skin; the skin itself is a thin bright line.
    falloff = np.float32(0.07 * size)
    t = np.minimum(dist / falloff, np.float32(1.0))
    thickness = np.float32(0.4) + np.float32(0.6) * np.sqrt(np.float32(1.0) - (np.float32(1.0) - t) ** 2)
    del t
    image = np.float32(_BACKGROUND) + (tissue - np.float32(_BACKGROUND)) * thickness
    del tissue, thickness
    skin_width = np.float32(max(1.0, 0.002 * size))
    image += np.float32(0.08) * np.exp(-((dist / skin_width) ** 2)) * region
    return image, fine


def _pectoral_muscle(rng: np.random.Generator, image: np.ndarray, region: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Draw the MLO view's pectoral muscle into `image`; the breast region off the muscle."""
    h, w = image.shape
    muscle = _pectoral(rng, (h, w)) * region
    texture = fine  # the muscle replaces the tissue there, so its texture can be reused
    gradient = np.float32(0.06) * (np.float32(1.0) - np.arange(w, dtype=np.float32)[None, :] / np.float32(w))
    muscle_value = np.float32(_PECTORAL) + gradient + np.float32(0.02) * texture
    image[...] = image * (np.float32(1.0) - muscle) + muscle_value * muscle
    return region & (muscle < 0.05)


def render_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int],
    laterality: str,
    view: str,
    mass: MassSpec | Sequence[MassSpec] | None = None,
    breast: BreastSpec | None = None,
    noise: float = 0.004,
) -> Phantom:
    """Draw one mammogram phantom; `make_phantom` is the short form returning (image, mask)."""
    h, w = (int(shape[0]), int(shape[1]))
    if h < 64 or w < 64:
        raise ValueError(f"phantom shape must be at least 64x64, got {h}x{w}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    side = chest_side_for(laterality)
    masses: list[MassSpec] = [] if mass is None else [mass] if isinstance(mass, MassSpec) else list(mass)
    breast = breast or random_breast(rng)
    # Everything is drawn with the chest wall at column 0 and mirrored at the end if needed.
    region, envelope, a_x = _breast_region((h, w), breast, view)
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)  # to the skin, not the chest edge
    image, fine = _tissue(rng, (h, w), breast, envelope, region, dist)
    del envelope
    pectoral_free = _pectoral_muscle(rng, image, region, fine) if view == "MLO" else region
    del fine
    image[~region] = np.float32(_BACKGROUND)
    mass_masks, centers = draw_masses(rng, image, region, pectoral_free, masses, a_x)
    if noise > 0:
        image += np.float32(noise) * rng.standard_normal((h, w), dtype=np.float32)
    np.clip(image, 0.0, 1.0, out=image)
    union = np.zeros((h, w), dtype=bool)
    for m in mass_masks:
        union |= m
    if side == "right":
        image, union, region = image[:, ::-1].copy(), union[:, ::-1].copy(), region[:, ::-1].copy()
        mass_masks = [m[:, ::-1].copy() for m in mass_masks]
        centers = [(r, w - 1 - c) for r, c in centers]
    return Phantom(image=image, mask=union, mass_masks=mass_masks, breast=region, chest_side=side, mass_centers=centers)


def make_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int],
    laterality: str,
    view: str,
    mass: MassSpec | Sequence[MassSpec] | None = None,
    breast: BreastSpec | None = None,
    noise: float = 0.004,
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom as (float32 image 0..1 with dense tissue bright, bool mass mask)."""
    phantom = render_phantom(rng, shape, laterality, view, mass=mass, breast=breast, noise=noise)
    return phantom.image, phantom.mask


def add_calcifications(
    rng: np.random.Generator, image: np.ndarray, allowed: np.ndarray
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """1-3 tiny bright specks (calcifications) at allowed pixels; returns the image and (x, y) points."""
    rows, cols = np.nonzero(allowed)
    if rows.size == 0:
        return image, []
    image = image.copy()
    points: list[tuple[float, float]] = []
    sigma = max(0.8, 0.0012 * max(image.shape))
    r = int(math.ceil(3 * sigma))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    spot = np.float32(0.2) * np.exp(-(xx * xx + yy * yy) / np.float32(2 * sigma * sigma))
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(rows.size))
        y, x = int(rows[i]), int(cols[i])
        y0, x0 = max(0, y - r), max(0, x - r)
        y1, x1 = min(image.shape[0], y + r + 1), min(image.shape[1], x + r + 1)
        image[y0:y1, x0:x1] += spot[y0 - (y - r):y1 - (y - r), x0 - (x - r):x1 - (x - r)]
        points.append((float(x), float(y)))
    np.clip(image, 0.0, 1.0, out=image)
    return image, points


# --------------------------------------------------------------------------------------
# Non-breast content
# --------------------------------------------------------------------------------------

_LABEL = 0.92  # density of a film label (bright: lead or tape on the film)
_LABEL_TEXT = 0.35  # its text strokes
_BORDER = 0.95  # density of an unexposed collimator strip


def _border_width(width: int) -> int:
    return max(2, round(0.015 * width))


def add_film_label(rng: np.random.Generator, phantom: Phantom, text: str) -> tuple[int, int, int, int] | None:
    """Draw a film label (a bright rectangle with `text`, e.g. "L CC") into the phantom's background,
    clear of the box around the breast (so a crop to the breast leaves it out) and of a collimator
    strip; its box (row0, row1, col0, col1), also kept in `phantom.label_box`, or None when the
    background has no room for it."""
    image = phantom.image
    h, w = image.shape
    lh, lw = max(5, round(0.04 * h)), max(10, round(0.12 * w))
    inset = _border_width(w) + max(1, round(0.01 * min(h, w)))
    keep = max(4, round(0.03 * max(h, w)))  # beyond the crop's margin (2 % of the longer side)
    rows, cols = np.nonzero(phantom.breast | phantom.mask)
    b_r0, b_r1, b_c0, b_c1 = rows.min() - keep, rows.max() + 1 + keep, cols.min() - keep, cols.max() + 1 + keep
    places = [(r, c) for r in range(inset, h - inset - lh + 1, lh) for c in range(inset, w - inset - lw + 1, lh)
              if r + lh <= b_r0 or r >= b_r1 or c + lw <= b_c0 or c >= b_c1]
    if not places:
        return None
    r0, c0 = places[int(rng.integers(len(places)))]
    strokes = np.zeros((lh, lw), dtype=np.uint8)  # OpenCV draws text on 8-bit images only
    scale = cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_SIMPLEX, max(3, round(0.6 * lh)))
    thickness = max(1, lh // 10)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    origin = (max(0, (lw - tw) // 2), min(lh - 1, (lh + th) // 2))
    cv2.putText(strokes, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    ink = strokes.astype(np.float32) / np.float32(255.0)
    image[r0:r0 + lh, c0:c0 + lw] = np.float32(_LABEL) + (np.float32(_LABEL_TEXT) - np.float32(_LABEL)) * ink
    phantom.label_box = (r0, r0 + lh, c0, c0 + lw)
    return phantom.label_box


def add_collimator_border(phantom: Phantom) -> tuple[int, int, int, int] | None:
    """Draw a bright collimator strip (1.5 % of the width) along the edge away from the chest wall;
    its box (row0, row1, col0, col1), also kept in `phantom.border_box`, or None when the breast
    reaches that edge."""
    h, w = phantom.image.shape
    bw = _border_width(w)
    c0 = 0 if phantom.chest_side == "right" else w - bw
    if (phantom.breast[:, c0:c0 + bw] | phantom.mask[:, c0:c0 + bw]).any():
        return None
    phantom.image[:, c0:c0 + bw] = np.float32(_BORDER)
    phantom.border_box = (0, h, c0, c0 + bw)
    return phantom.border_box
