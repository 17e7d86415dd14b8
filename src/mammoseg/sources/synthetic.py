"""Synthetic mammogram phantoms: mammoseg's built-in data, written in the public layouts.

Why: the pipeline must run end to end (and be tested) without a clinical archive. The
phantoms are realistic where the method cares: a breast against the chest-wall edge with a
skin line and a dark air background, fibroglandular texture with the power-law spectrum
measured on mammographic backgrounds (1/f^beta, beta ~ 3), a pectoral muscle in MLO views,
and low-contrast masses (round, lobulated, spiculated) with soft or ill-defined margins.
The mask of a mass is its profile thresholded at half-maximum, so mask and visible mass
agree. They are written as real DICOM (MG, 12-14 bit, MONOCHROME1 and MONOCHROME2, VOI as
window / VOI LUT Sequence / none) in the layout of the `manifest`, `inbreast` or
`cbis-ddsm` readers, so reading them back exercises the same code as real data.

Geometry conventions: a right breast (`R`) has its chest wall on the image's right edge,
a left breast (`L`) on the left edge. Both views of one breast show the same mass (same
size and shape, pixel for pixel) at a similar distance from the chest wall.

Mass size rule: a mass of `d` mm (4-40 mm) is drawn `d / spacing` pixels across (its
physical size) but never wider than `f(d) * width` with
`f(d) = 0.03 + 0.12 * (d - 4) / 36`. At full-field shapes (e.g. 4084x3328 at 0.07 mm)
the physical size wins; at the small default shape (1000x800) the image is physically far
too small for its pixel spacing and the width rule keeps masses at 3-15 % of the width.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import plistlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mammoseg.io import atomic_path, write_bytes_atomic, write_csv_atomic, write_png, write_text_atomic

log = logging.getLogger(__name__)

#: Layouts `write_synthetic_dataset` can write (the `--format` values of `prepare`).
FORMATS: tuple[str, ...] = ("manifest", "inbreast", "cbis-ddsm")
#: DICOM SOP classes of digital mammography images.
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Manifest CSV columns written by the `manifest` layout.
MANIFEST_CSV_COLUMNS: tuple[str, ...] = ("image", "mask", "patient_id", "view", "laterality", "id")
#: Columns of CBIS-DDSM's mass description CSVs, in the dataset's order.
CBIS_CSV_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
CBIS_CSV_NAMES = {"train": "mass_case_description_train_set.csv", "test": "mass_case_description_test_set.csv"}
#: Top-level entries this generator owns in its output folder (removed by `overwrite=True`).
_OWNED_ENTRIES = (
    "images",
    "masks",
    "manifest.csv",
    "AllDICOMs",
    "AllXML",
    "CBIS-DDSM",
    *CBIS_CSV_NAMES.values(),
    "synth.json",
)

MASS_KINDS = ("round", "lobulated", "spiculated")
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
_BACKGROUND = 0.03  # density of the air around the breast (dark)
_FAT = 0.28  # density of fatty tissue
_GLAND = 0.24  # extra density of fibroglandular tissue over fat
_GLAND_SOFTNESS = 1.0  # width of the fat/gland transition (in SDs of the texture field)
# Mass conspicuity. Tuned so a ResNet22-UNet learns the masses at 256 px but not trivially:
# with (0.06, 0.12) / 0.85 / softness 0.8 / gland 0.22 a quick 160-image run reached only
# ~0.66 holdout Dice on mass images; these values reached ~0.86 (see the B1 report).
_CONTRAST = (0.09, 0.15)  # density a mass adds over the (smoothed) tissue it sits in
_HOMOGENISE = 0.9  # how far a mass's interior is smoothed: masses are more uniform than tissue
_PECTORAL = 0.56  # density of the pectoral muscle


# --------------------------------------------------------------------------------------
# What a phantom is made of
# --------------------------------------------------------------------------------------


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


def power_law_fields(
    rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Two independent zero-mean, unit-SD float32 fields with power spectrum ~ 1/f^beta.

    Filtered white noise, drawn directly in the Fourier domain: complex white noise times
    |f|^(-beta/2), one inverse FFT; its real and imaginary parts are independent fields
    with that spectrum (so one FFT gives two). A low-frequency knee at 1/(image size)
    keeps the largest scales from swamping the rest, so the texture looks alike at every
    image size.
    """
    h, w = shape
    # The field is stationary, so it can be drawn on a grid whose sizes the FFT handles fast
    # (only factors 2, 3, 5; e.g. 4084 = 4 x 1021 is slow) and cropped.
    fh, fw = _fast_fft_size(h), _fast_fft_size(w)
    fy = np.fft.fftfreq(fh).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(fw).astype(np.float32)[None, :]
    knee = np.float32(1.0 / max(h, w))
    spectrum = np.empty((fh, fw), dtype=np.complex64)
    spectrum.real = rng.standard_normal((fh, fw), dtype=np.float32)
    spectrum.imag = rng.standard_normal((fh, fw), dtype=np.float32)
    amplitude = (fy * fy + fx * fx + knee * knee) ** np.float32(-beta / 4)
    amplitude[0, 0] = 0.0
    spectrum *= amplitude
    del amplitude
    field = np.fft.ifft2(spectrum)[:h, :w]
    del spectrum
    pair = []
    for part in (field.real, field.imag):
        part = part.astype(np.float32)
        part -= part.mean()
        part /= max(float(part.std()), 1e-12)
        pair.append(part)
    return pair[0], pair[1]


def _fast_fft_size(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0) -> np.ndarray:
    """One zero-mean, unit-SD float32 field with power spectrum ~ 1/f^beta (see `power_law_fields`)."""
    return power_law_fields(rng, shape, beta)[0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


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
    return _sigmoid((1.0 - s) / softness)


def _mass_profile(mass: MassSpec, half: int, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Mass density profile (max ~1) on a (2*half+1)^2 window centred on the mass."""
    coords = np.arange(-half, half + 1, dtype=np.float32)
    dy = coords[:, None] - np.float32(offset[0])
    dx = coords[None, :] - np.float32(offset[1])
    rho = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx) - np.float32(mass.angle)
    radius = np.full_like(theta, np.float32(mass.diameter_px / 2))
    for k, amp, phase in mass.harmonics:
        radius *= 1.0 + np.float32(amp) * np.cos(k * theta + np.float32(phase))
    core = _sigmoid((1.0 - rho / radius) / np.float32(mass.edge))
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
    size = max(h, w)

    # Everything is drawn with the chest wall at column 0 and mirrored at the end if needed.
    region, envelope, a_x = _breast_region((h, w), breast, view)
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)  # to the skin, not the chest edge

    # Fibroglandular tissue: a thresholded 1/f^3 field, denser behind the nipple region.
    glands, fine = power_law_fields(rng, (h, w), beta=3.0)
    glands += np.float32(1.8) * (envelope - np.float32(0.5))
    del envelope
    threshold = np.float32(1.25 - 3.2 * breast.density)
    tissue = np.float32(_FAT) + np.float32(_GLAND) * _sigmoid((glands - threshold) / np.float32(_GLAND_SOFTNESS))
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

    pectoral_free = region
    if view == "MLO":
        muscle = _pectoral(rng, (h, w)) * region
        texture = fine  # the muscle replaces the tissue there, so its texture can be reused
        gradient = np.float32(0.06) * (np.float32(1.0) - np.arange(w, dtype=np.float32)[None, :] / np.float32(w))
        muscle_value = np.float32(_PECTORAL) + gradient + np.float32(0.02) * texture
        image = image * (np.float32(1.0) - muscle) + muscle_value * muscle
        pectoral_free = region & (muscle < 0.05)
        del muscle_value
    del fine
    image[~region] = np.float32(_BACKGROUND)

    # Masses: placed well inside the breast, off the pectoral muscle and off each other.
    # The image edges count as boundaries here, so no mass is cut off by the chest-wall edge.
    bordered = cv2.copyMakeBorder(pectoral_free.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    room = cv2.distanceTransform(bordered, cv2.DIST_L2, 5)[1:-1, 1:-1]
    del bordered
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
        depth_px = None if spec.depth is None else spec.depth * a_x
        cy, cx = _place_mass(rng, allowed, depth_px, a_x)
        reach = extent
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
        mass_masks.append(full_mask)
        centers.append((cy, cx))
        keep_out = int(extent * 2.2 + 4)
        taken[max(0, cy - keep_out):cy + keep_out + 1, max(0, cx - keep_out):cx + keep_out + 1] = True

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


# --------------------------------------------------------------------------------------
# DICOM encoding
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoding:
    """How one phantom is stored: bit depth, photometric interpretation, VOI and intent.

    `voi` is `window` (one LINEAR window), `windows` (two windows; the first covers the
    breast), `lut` (VOI LUT Sequence) or `none`.
    """

    bits: int = 14
    photometric: str = "MONOCHROME2"
    voi: str = "window"
    intent: str = "FOR PRESENTATION"
    spacing: float = 0.085
    lut_bits: int = 16


def to_stored_values(
    image: np.ndarray, encoding: Encoding, rng: np.random.Generator
) -> np.ndarray:
    """Quantise a 0..1 density image to `encoding.bits`-bit stored values (uint16).

    MONOCHROME2 stores density directly (air dark); MONOCHROME1 stores the inverse, so a
    reader that inverts MONOCHROME1 after the VOI sees dense tissue bright either way.
    """
    top = (1 << encoding.bits) - 1
    offset = rng.uniform(0.01, 0.05) * top
    gain = rng.uniform(0.85, 0.94) * top
    values = np.rint(np.float32(offset) + image * np.float32(gain))
    np.clip(values, 0, top, out=values)
    stored = values.astype(np.uint16)
    if encoding.photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    return stored


def tissue_window(stored: np.ndarray, breast: np.ndarray, bits: int) -> tuple[int, int]:
    """Stored-value range a window should show: 0.5th percentile to maximum of the breast, widened 3 %.

    The top is the maximum, not a percentile: masses are often the densest spots and
    must not be clipped by the window that is meant to show them.
    """
    if not breast.any():
        breast = np.ones(stored.shape, dtype=bool)
    step = max(1, int(max(stored.shape) // 1024))  # a percentile of a subsample is plenty
    sample = stored[::step, ::step][breast[::step, ::step]]
    lo = float(np.percentile(sample, 0.5)) if sample.size else float(stored[breast].min())
    hi = float(stored[breast].max())
    pad = 0.03 * max(hi - lo, 1.0)
    top = (1 << bits) - 1
    lo_i, hi_i = int(max(0, math.floor(lo - pad))), int(min(top, math.ceil(hi + pad)))
    return lo_i, max(hi_i, lo_i + 1)


def _window_center_width(lo: int, hi: int) -> tuple[float, float]:
    # DICOM LINEAR: the window runs from c - 0.5 - (w - 1)/2 to c - 0.5 + (w - 1)/2.
    width = hi - lo + 1
    return round(lo + 0.5 + (width - 1) / 2, 1), float(width)


def _voi_lut_item(lo: int, hi: int, lut_bits: int):
    """A VOI LUT Sequence item mapping stored lo..hi through a gentle S-curve to 0..2^lut_bits-1."""
    from pydicom.dataset import Dataset

    n = hi - lo + 1
    u = np.linspace(0.0, 1.0, n)
    k = 2.5
    curve = (np.tanh(k * (u - 0.5)) / math.tanh(k / 2) + 1.0) / 2.0
    data = np.rint(curve * ((1 << lut_bits) - 1)).astype("<u2")
    item = Dataset()
    item.add_new(0x00283002, "US", [n if n < 65536 else 0, lo, lut_bits])  # LUT Descriptor
    item.add_new(0x00283003, "LO", "MAMMOSEG S-CURVE")  # LUT Explanation
    item.add_new(0x00283006, "OW", data.tobytes())  # LUT Data
    return item


def _view_code(view: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = ("399162004", "SCT") if view == "CC" else ("399368009", "SCT")
    item.CodeMeaning = "cranio-caudal" if view == "CC" else "medio-lateral oblique"
    return item


_ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}


@dataclass(frozen=True)
class DicomInfo:
    """Identity and context of one DICOM file (everything but the pixels)."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    laterality: str = ""
    view: str = ""
    study_date: str = "20160720"
    series_description: str = "synthetic mammogram"
    series_number: int = 1
    instance_number: int = 1
    sop_class: str = MG_FOR_PRESENTATION


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    info: DicomInfo,
    encoding: Encoding,
    window: tuple[int, int] | None = None,
) -> None:
    """Write `pixels` (uint16 stored values, or uint8 for masks) as a DICOM file, atomically.

    `window` is the (lo, hi) stored-value range the VOI should show; it is ignored when
    `encoding.voi == "none"`.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = info.sop_class
    meta.MediaStorageSOPInstanceUID = info.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY", ""] if info.sop_class == SECONDARY_CAPTURE else ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = info.sop_class
    ds.SOPInstanceUID = info.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "MG"
    ds.Manufacturer = "mammoseg synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = info.series_description
    ds.PatientName = info.patient_id
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.BodyPartExamined = "BREAST"
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = info.series_number
    ds.InstanceNumber = info.instance_number
    if info.sop_class == SECONDARY_CAPTURE:
        ds.ConversionType = "WSD"
    else:
        ds.PresentationIntentType = encoding.intent
        ds.BurnedInAnnotation = "NO"
        ds.BreastImplantPresent = "NO"
        ds.PixelIntensityRelationship = "LOG"
        # -1: higher stored values mean less X-ray intensity (denser), as MONOCHROME2 shows it.
        ds.PixelIntensityRelationshipSign = -1 if encoding.photometric == "MONOCHROME2" else 1
    if info.laterality:
        ds.Laterality = info.laterality
        ds.ImageLaterality = info.laterality
    if info.view:
        ds.ViewPosition = info.view
        ds.ViewCodeSequence = [_view_code(info.view)]
        ds.PatientOrientation = _ORIENTATION.get((info.laterality, info.view), "")
    spacing = f"{encoding.spacing:.4f}".rstrip("0").rstrip(".")
    ds.PixelSpacing = [spacing, spacing]
    if info.sop_class != SECONDARY_CAPTURE:
        ds.ImagerPixelSpacing = [spacing, spacing]
    bits = 8 if pixels.dtype == np.uint8 else encoding.bits
    ds.set_pixel_data(pixels, encoding.photometric, bits, generate_instance_uid=False)
    if encoding.voi != "none" and window is not None and pixels.dtype != np.uint8:
        lo, hi = window
        if encoding.voi == "lut":
            ds.VOILUTSequence = [_voi_lut_item(lo, hi, encoding.lut_bits)]
        else:
            center, width = _window_center_width(lo, hi)
            if encoding.voi == "windows":
                # A second, narrower window on the dense end; readers use the first by default.
                dense_lo = (lo + hi) // 2 if encoding.photometric == "MONOCHROME2" else lo
                dense_hi = hi if encoding.photometric == "MONOCHROME2" else (lo + hi) // 2
                c2, w2 = _window_center_width(dense_lo, dense_hi)
                ds.WindowCenter, ds.WindowWidth = [center, c2], [width, w2]
                ds.WindowCenterWidthExplanation = ["TISSUE", "DENSE"]
            else:
                ds.WindowCenter, ds.WindowWidth = center, width
                ds.WindowCenterWidthExplanation = "TISSUE"
            ds.VOILUTFunction = "LINEAR"
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


# --------------------------------------------------------------------------------------
# Dataset plan: who has which breast, which masses, stored how
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePlan:
    """One image of the dataset before it is drawn."""

    patient_index: int  # 0-based
    laterality: str
    view: str
    breast: BreastSpec
    masses: tuple[MassSpec, ...]
    encoding: Encoding

    @property
    def has_mass(self) -> bool:
        return bool(self.masses)


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic_dataset` wrote."""

    out: Path
    fmt: str
    n_images: int
    n_with_mass: int
    n_patients: int
    images: tuple[Path, ...]  # the image DICOM files
    annotations: tuple[Path, ...] = ()  # mask PNGs, INbreast XMLs or CBIS ROI/crop DICOMs
    index_files: tuple[Path, ...] = field(default_factory=tuple)  # manifest.csv or the CBIS CSVs


def plan_dataset(patients: int, fmt: str, shape: tuple[int, int], seed: int) -> list[ImagePlan]:
    """Decide every image: breasts, masses (both views of a breast share them) and encodings.

    About a quarter of the breasts have no mass (none in `cbis-ddsm`, which lists only
    images with a mass); one breast has two masses when there are enough breasts.
    Photometric interpretation and VOI kind cycle over a shuffled order so every kind
    occurs as soon as there are a few images.
    """
    rng = np.random.default_rng([seed, 101])
    n_breasts = 2 * patients
    if fmt == "cbis-ddsm":
        empty: set[int] = set()
    else:
        n_empty = max(1, int(round(0.25 * n_breasts)))
        empty = {int(b) for b in rng.choice(n_breasts, size=n_empty, replace=False)}
    with_mass = [b for b in range(n_breasts) if b not in empty]
    double = int(rng.choice(with_mass)) if (len(with_mass) >= 3 or fmt == "cbis-ddsm") and with_mass else -1

    n_images = 2 * n_breasts
    order = np.empty(n_images, dtype=int)
    order[rng.permutation(n_images)] = np.arange(n_images)  # rank of each image in a shuffled cycle
    plans: list[ImagePlan] = []
    for p in range(patients):
        prng = np.random.default_rng([seed, 102, p])
        spacing = 0.07 if fmt == "inbreast" else round(float(prng.uniform(0.07, 0.1)), 3)
        for side, lat in enumerate(LATERALITIES):
            b = 2 * p + side
            breast = random_breast(prng)
            n_mass = 0 if b in empty else (2 if b == double else 1)
            masses = tuple(
                random_mass(prng, shape[1], spacing, depth=float(prng.uniform(0.25, 0.75))) for _ in range(n_mass)
            )
            for v, view in enumerate(VIEWS):
                rank = int(order[2 * b + v])
                plans.append(ImagePlan(p, lat, view, breast, masses, _encoding(fmt, rank, spacing, prng)))
    return plans


def _encoding(fmt: str, rank: int, spacing: float, rng: np.random.Generator) -> Encoding:
    if fmt == "inbreast":
        # INbreast's own conventions: 14-bit MONOCHROME2, 0.07 mm, and no VOI at all.
        return Encoding(bits=14, photometric="MONOCHROME2", voi="none", intent="FOR PRESENTATION", spacing=spacing)
    voi = ("window", "lut", "none")[rank % 3]
    if voi == "window" and rng.random() < 0.3:
        voi = "windows"
    return Encoding(
        bits=int(rng.choice([12, 13, 14])),
        photometric=("MONOCHROME2", "MONOCHROME1")[rank % 2],
        voi=voi,
        intent="FOR PROCESSING" if rng.random() < 0.15 else "FOR PRESENTATION",
        spacing=spacing,
        lut_bits=int(rng.choice([12, 16])),
    )


def _uid(seed: int, fmt: str, shape: tuple[int, int], *parts: object) -> str:
    """A DICOM UID that is the same on every rerun with the same seed, format and shape."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["mammoseg-synth", str(seed), fmt, f"{shape[0]}x{shape[1]}", *map(str, parts)]))


def _study_date(seed: int, patient: int) -> tuple[str, str]:
    """(DICOM date YYYYMMDD, CBIS folder date MM-DD-YYYY) for one patient's study."""
    rng = np.random.default_rng([seed, 103, patient])
    year, month, day = 2016, int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"{year}{month:02d}{day:02d}", f"{month:02d}-{day:02d}-{year}"


# --------------------------------------------------------------------------------------
# Writing the layouts
# --------------------------------------------------------------------------------------


def write_synthetic_dataset(
    out: str | os.PathLike,
    patients: int = 12,
    fmt: str = "manifest",
    shape: tuple[int, int] = (1000, 800),
    seed: int = 0,
    overwrite: bool = False,
    naming: str = "new",
    progress: bool = True,
) -> SynthSummary:
    """Write `patients` synthetic patients (CC and MLO of both breasts) to `out` in layout `fmt`.

    Refuses a non-empty `out` unless `overwrite` (which then removes only what this
    generator writes: images/, masks/, manifest.csv, AllDICOMs/, AllXML/, CBIS-DDSM/, the
    CBIS CSVs, synth.json). `naming` (`new` or `old`) picks CBIS-DDSM's folder naming.
    Every file is written atomically; the same arguments give byte-identical files.
    """
    from tqdm import tqdm

    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if patients < 1:
        raise ValueError(f"--patients must be at least 1, got {patients}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    if naming not in ("new", "old"):
        raise ValueError(f"CBIS-DDSM naming must be 'new' or 'old', got {naming!r}")
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 64:
        raise ValueError(f"--shape must be at least 64x64, got {shape[0]}x{shape[1]}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: folder is not empty; choose another --out or pass --overwrite")
        for name in _OWNED_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)

    plans = plan_dataset(patients, fmt, shape, seed)
    writer = {"manifest": _ManifestWriter, "inbreast": _INbreastWriter, "cbis-ddsm": _CbisWriter}[fmt](
        out, seed, shape, patients, naming
    )
    for index, plan in enumerate(tqdm(plans, desc=f"synth {fmt}", unit="image", disable=not progress)):
        rng = np.random.default_rng([seed, 104, plan.patient_index, LATERALITIES.index(plan.laterality),
                                     VIEWS.index(plan.view)])
        phantom = render_phantom(rng, shape, plan.laterality, plan.view, mass=plan.masses, breast=plan.breast)
        writer.add(index, plan, phantom, rng)
    summary = writer.finish()
    settings = {"format": fmt, "patients": patients, "shape": list(shape), "seed": seed, "naming": naming,
                "n_images": summary.n_images, "n_with_mass": summary.n_with_mass}
    write_text_atomic(out / "synth.json", json.dumps(settings, indent=2) + "\n")
    log.debug("wrote %d synthetic images (%d with a mass) of %d patients to %s",
             summary.n_images, summary.n_with_mass, patients, out)
    return summary


class _LayoutWriter:
    """Shared bookkeeping of the three layout writers."""

    def __init__(self, out: Path, seed: int, shape: tuple[int, int], patients: int, naming: str) -> None:
        self.out, self.seed, self.shape, self.patients, self.naming = out, seed, shape, patients, naming
        self.images: list[Path] = []
        self.annotations: list[Path] = []
        self.index_files: list[Path] = []
        self.n_with_mass = 0

    fmt = ""

    def uid(self, *parts: object) -> str:
        return _uid(self.seed, self.fmt, self.shape, *parts)

    def encode(self, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
        stored = to_stored_values(phantom.image, plan.encoding, rng)
        return stored, tissue_window(stored, phantom.breast, plan.encoding.bits)

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def finish(self) -> SynthSummary:
        return SynthSummary(
            out=self.out, fmt=self.fmt, n_images=len(self.images), n_with_mass=self.n_with_mass,
            n_patients=self.patients, images=tuple(self.images), annotations=tuple(self.annotations),
            index_files=tuple(self.index_files),
        )


class _ManifestWriter(_LayoutWriter):
    """`images/<id>.dcm`, `masks/<id>.png` (0/255) and `manifest.csv` (empty mask = no mass)."""

    fmt = "manifest"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.rows: list[dict[str, str]] = []

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        pid = f"SYN{plan.patient_index + 1:04d}"
        image_id = f"{pid}_{plan.laterality}_{plan.view}"
        stored, window = self.encode(plan, phantom, rng)
        date, _ = _study_date(self.seed, plan.patient_index)
        sop_class = MG_FOR_PROCESSING if plan.encoding.intent == "FOR PROCESSING" else MG_FOR_PRESENTATION
        info = DicomInfo(
            patient_id=pid, study_uid=self.uid("study", plan.patient_index),
            series_uid=self.uid("series", plan.patient_index, plan.laterality, plan.view),
            sop_uid=self.uid("image", plan.patient_index, plan.laterality, plan.view),
            laterality=plan.laterality, view=plan.view, study_date=date, sop_class=sop_class,
            series_number=1 + 2 * LATERALITIES.index(plan.laterality) + VIEWS.index(plan.view),
        )
        image_path = self.out / "images" / f"{image_id}.dcm"
        write_dicom(image_path, stored, info, plan.encoding, window)
        self.images.append(image_path)
        mask_cell = ""
        if plan.has_mass:
            mask_path = self.out / "masks" / f"{image_id}.png"
            write_png(mask_path, phantom.mask.astype(np.uint8) * 255)
            self.annotations.append(mask_path)
            mask_cell = f"masks/{image_id}.png"
            self.n_with_mass += 1
        self.rows.append({"image": f"images/{image_id}.dcm", "mask": mask_cell, "patient_id": pid,
                          "view": plan.view, "laterality": plan.laterality, "id": image_id})

    def finish(self) -> SynthSummary:
        path = self.out / "manifest.csv"
        write_csv_atomic(path, self.rows, MANIFEST_CSV_COLUMNS)
        self.index_files.append(path)
        return super().finish()


def _contour_points(mask: np.ndarray) -> list[tuple[float, float]]:
    """Outline of the (single-component) mask as (x, y) pixel centres, in drawing order."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    largest = max(contours, key=len)
    return [(float(x), float(y)) for x, y in largest[:, 0, :]]


def _point(x: float, y: float) -> str:
    return f"({x:.6f}, {y:.6f})"


class _INbreastWriter(_LayoutWriter):
    """`AllDICOMs/<fileid>_<patienthash>_MG_<L|R>_<CC|ML>_ANON.dcm` and `AllXML/<fileid>.xml` plists."""

    fmt = "inbreast"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        rng = np.random.default_rng([self.seed, 105])
        n = 4 * self.patients
        ids: list[int] = []
        seen: set[int] = set()
        while len(ids) < n:
            candidate = int(rng.integers(20_000_000, 54_000_000))
            if candidate not in seen:
                seen.add(candidate)
                ids.append(candidate)
        self.file_ids = ids

    def patient_hash(self, patient: int) -> str:
        return hashlib.sha256(f"mammoseg-synth/{self.seed}/{patient}".encode()).hexdigest()[:16]

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        file_id = f"{self.file_ids[index]:08d}"
        phash = self.patient_hash(plan.patient_index)
        view_code = "ML" if plan.view == "MLO" else plan.view
        calcs: list[tuple[float, float]] = []
        image = phantom.image
        if plan.has_mass and rng.random() < 0.5:
            image, calcs = _add_calcifications(rng, image, phantom.breast & ~_dilate(phantom.mask, 5))
        stored = to_stored_values(image, plan.encoding, rng)
        date, _ = _study_date(self.seed, plan.patient_index)
        info = DicomInfo(
            patient_id=phash, study_uid=self.uid("study", plan.patient_index),
            series_uid=self.uid("series", plan.patient_index, plan.laterality, plan.view),
            sop_uid=self.uid("image", plan.patient_index, plan.laterality, plan.view),
            laterality=plan.laterality, view=plan.view, study_date=date, instance_number=index + 1,
        )
        path = self.out / "AllDICOMs" / f"{file_id}_{phash}_MG_{plan.laterality}_{view_code}_ANON.dcm"
        write_dicom(path, stored, info, plan.encoding)  # INbreast carries no VOI
        self.images.append(path)
        if plan.has_mass:
            self.n_with_mass += 1
            xml = self.out / "AllXML" / f"{file_id}.xml"
            write_bytes_atomic(xml, plistlib.dumps(_inbreast_plist(phantom, calcs, stored, plan.encoding.spacing)))
            self.annotations.append(xml)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _add_calcifications(
    rng: np.random.Generator, image: np.ndarray, allowed: np.ndarray
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """1-3 tiny bright specks (calcifications) at allowed pixels; returns the image and (x, y) points."""
    rows, cols = np.nonzero(allowed)
    if rows.size == 0:
        return image, []
    image = image.copy()
    points = []
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


def _inbreast_plist(phantom: Phantom, calcs: list[tuple[float, float]], stored: np.ndarray, spacing: float) -> dict:
    """INbreast's annotation plist: Images[0].ROIs with Mass polygons and Calcification points."""
    rois = []
    for mask in phantom.mass_masks:
        points = _contour_points(mask)
        rows, cols = np.nonzero(mask)
        values = stored[mask].astype(np.float64)
        rois.append({
            "Area": float(mask.sum() * spacing * spacing),
            "Center": _point(float(cols.mean()), float(rows.mean())),
            "Dev": float(values.std()),
            "IndexInImage": len(rois),
            "Max": float(values.max()),
            "Mean": float(values.mean()),
            "Min": float(values.min()),
            "Name": "Mass",
            "NumberOfPoints": len(points),
            "Point_mm": [_point(x * spacing, y * spacing) for x, y in points],
            "Point_px": [_point(x, y) for x, y in points],
            "Total": float(values.sum()),
            "Type": 15,
        })
    for x, y in calcs:
        value = float(stored[int(y), int(x)])
        rois.append({
            "Area": 0.0, "Center": _point(x, y), "Dev": 0.0, "IndexInImage": len(rois), "Max": value,
            "Mean": value, "Min": value, "Name": "Calcification", "NumberOfPoints": 1,
            "Point_mm": [_point(x * spacing, y * spacing)], "Point_px": [_point(x, y)], "Total": value, "Type": 19,
        })
    return {"Images": [{"ImageIndex": 0, "ImageIndexInStudy": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}


_CBIS_SHAPE = {"round": ("ROUND", "OVAL"), "lobulated": ("LOBULATED",), "spiculated": ("IRREGULAR",)}
_CBIS_MARGIN = {"circumscribed": "CIRCUMSCRIBED", "ill_defined": "ILL_DEFINED", "spiculated": "SPICULATED"}


class _CbisWriter(_LayoutWriter):
    """The TCIA CBIS-DDSM tree (new or old naming) and the two mass description CSVs."""

    fmt = "cbis-ddsm"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        # The last ~20 % of the patients (at least one when there are two or more) form the test set.
        n_test = max(1, int(round(0.2 * self.patients))) if self.patients >= 2 else 0
        self.test_patients = set(range(self.patients - n_test, self.patients))
        self.rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
        self.root = self.out / "CBIS-DDSM"
        self.n_swapped = 0

    def _file(self, case: str, study_uid: str, folder_date: str, series_uid: str, series_label: str,
              instance: int) -> tuple[Path, str]:
        """(path on disk in the chosen naming, path as the CSV writes it: old UID style)."""
        csv_path = f"{case}/{study_uid}/{series_uid}/{instance:06d}.dcm"
        if self.naming == "old":
            return self.root / csv_path, csv_path
        study_folder = f"{folder_date}-DDSM-NA-{study_uid[-5:]}"
        series_folder = f"1.000000-{series_label}-{series_uid[-5:]}"
        return self.root / case / study_folder / series_folder / f"1-{instance + 1}.dcm", csv_path

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        p = plan.patient_index
        split = "test" if p in self.test_patients else "train"
        pid = f"P_{p + 1:05d}"
        side = "LEFT" if plan.laterality == "L" else "RIGHT"
        case = f"Mass-{'Test' if split == 'test' else 'Training'}_{pid}_{side}_{plan.view}"
        stored, window = self.encode(plan, phantom, rng)
        _, folder_date = _study_date(self.seed, p)
        date = folder_date[6:] + folder_date[:2] + folder_date[3:5]
        sop_class = MG_FOR_PROCESSING if plan.encoding.intent == "FOR PROCESSING" else MG_FOR_PRESENTATION
        study = self.uid("study", p, plan.laterality, plan.view)
        series = self.uid("series", p, plan.laterality, plan.view)
        path, image_csv = self._file(case, study, folder_date, series, "full mammogram images", 0)
        info = DicomInfo(patient_id=case, study_uid=study, series_uid=series,
                         sop_uid=self.uid("image", p, plan.laterality, plan.view), laterality=plan.laterality,
                         view=plan.view, study_date=date, series_description="full mammogram images",
                         sop_class=sop_class)
        write_dicom(path, stored, info, plan.encoding, window)
        self.images.append(path)
        if plan.has_mass:
            self.n_with_mass += 1
        density = 1 + min(3, int(plan.breast.density / 0.55 * 4))
        for j, (mass, mask) in enumerate(zip(plan.masses, phantom.mass_masks), start=1):
            crop_csv, roi_csv = self._write_abnormality(case, j, p, plan, mass, mask, stored, folder_date, date, rng)
            # The real CSVs swap the cropped-image and ROI-mask paths in places; so do these
            # (about a quarter of the rows, and always the second row when none before it was).
            n_rows = len(self.rows["train"]) + len(self.rows["test"])
            swapped = rng.random() < 0.25 or (self.n_swapped == 0 and n_rows == 1)
            if swapped:
                self.n_swapped += 1
                crop_csv, roi_csv = roi_csv, crop_csv
            malignant = mass.kind == "spiculated" or rng.random() < 0.35
            self.rows[split].append({
                "patient_id": pid,
                "breast_density": str(density),
                "left or right breast": side,
                "image view": plan.view,
                "abnormality id": str(j),
                "abnormality type": "mass",
                "mass shape": str(rng.choice(_CBIS_SHAPE[mass.kind])),
                "mass margins": _CBIS_MARGIN[mass.margin],
                "assessment": str(int(rng.integers(4, 6)) if malignant else int(rng.integers(2, 5))),
                "pathology": "MALIGNANT" if malignant else str(rng.choice(["BENIGN", "BENIGN_WITHOUT_CALLBACK"])),
                "subtlety": str(int(np.clip(round(1 + 4 * (mass.contrast - 0.06) / 0.06), 1, 5))),
                "image file path": image_csv,
                "cropped image file path": crop_csv,
                "ROI mask file path": roi_csv,
            })

    def _write_abnormality(self, case: str, j: int, p: int, plan: ImagePlan, mass: MassSpec, mask: np.ndarray,
                           stored: np.ndarray, folder_date: str, date: str,
                           rng: np.random.Generator) -> tuple[str, str]:
        """Write one abnormality's ROI mask (full size, 0/255) and cropped image; return their CSV paths."""
        roi_case = f"{case}_{j}"
        key = (p, plan.laterality, plan.view, j)
        study = self.uid("roi-study", *key)
        rows, cols = np.nonzero(mask)
        margin = int(0.15 * (np.ptp(rows) + np.ptp(cols)) / 2) + 2
        y0, y1 = max(0, rows.min() - margin), min(mask.shape[0], rows.max() + margin + 1)
        x0, x1 = max(0, cols.min() - margin), min(mask.shape[1], cols.max() + margin + 1)
        crop = np.ascontiguousarray(stored[y0:y1, x0:x1])
        roi = mask.astype(np.uint8) * 255
        layout = rng.random()
        if layout < 0.3:
            # Crop and mask in two series of their own ("cropped images", "ROI mask images").
            crop_series, roi_series = self.uid("crop-series", *key), self.uid("roi-series", *key)
            crop_file = self._file(roi_case, study, folder_date, crop_series, "cropped images", 0)
            roi_file = self._file(roi_case, study, folder_date, roi_series, "ROI mask images", 0)
        else:
            # One series holding both; which instance is the mask varies, as in the real data.
            series = self.uid("roi-series", *key)
            crop_index, roi_index = (0, 1) if layout < 0.65 else (1, 0)
            crop_series = roi_series = series
            crop_file = self._file(roi_case, study, folder_date, series, "ROI mask images", crop_index)
            roi_file = self._file(roi_case, study, folder_date, series, "ROI mask images", roi_index)
        mask_encoding = Encoding(bits=8, photometric="MONOCHROME2", voi="none", spacing=plan.encoding.spacing)
        crop_info = DicomInfo(patient_id=roi_case, study_uid=study, series_uid=crop_series,
                              sop_uid=self.uid("crop", *key), laterality=plan.laterality, view=plan.view,
                              study_date=date, series_description="cropped images", sop_class=SECONDARY_CAPTURE,
                              instance_number=1 + (crop_file[0].name in ("1-2.dcm", "000001.dcm")))
        roi_info = DicomInfo(patient_id=roi_case, study_uid=study, series_uid=roi_series,
                             sop_uid=self.uid("roi", *key), laterality=plan.laterality, view=plan.view,
                             study_date=date, series_description="ROI mask images", sop_class=SECONDARY_CAPTURE,
                             instance_number=1 + (roi_file[0].name in ("1-2.dcm", "000001.dcm")))
        write_dicom(crop_file[0], crop, crop_info, Encoding(bits=plan.encoding.bits, photometric=plan.encoding.photometric,
                                                             voi="none", spacing=plan.encoding.spacing))
        write_dicom(roi_file[0], roi, roi_info, mask_encoding)
        self.annotations += [roi_file[0], crop_file[0]]
        return crop_file[1], roi_file[1]

    def finish(self) -> SynthSummary:
        for split, name in CBIS_CSV_NAMES.items():
            path = self.out / name
            write_csv_atomic(path, self.rows[split], CBIS_CSV_COLUMNS)
            self.index_files.append(path)
        return super().finish()
