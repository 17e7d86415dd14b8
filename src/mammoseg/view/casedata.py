"""What the case and patient pages draw, packed for a browser opened from disk: ``full/<f>.js``.

The pages window the image themselves (window/level on the values predict read, not on an
8-bit picture), so they need the 16-bit pixels. A page opened from ``file://`` may not
`fetch` a file, and a canvas that drew a ``file://`` picture may not be read back
(`getImageData` refuses a "tainted" canvas), so the pixels travel in a script the page adds
with a ``<script>`` tag: ``MAMMOSEG_CASE("<f>", {...})``. Its arrays are zlib streams
(the browser's own `DecompressionStream("deflate")` inflates them) in base64:

- ``pixels``: the image, uint16, one row after another, each value stored as its difference
  from its left neighbour (modulo 65536; the first of a row from 0), split into a plane of
  high bytes followed by a plane of low bytes — smooth tissue then compresses better than
  the raw values (1.1–1.2 times smaller on the noisy synthetic mammograms);
- ``ref``, ``pred``: the masks, one byte per pixel (0 or 1);
- ``prob``: the probability map, one byte per pixel (round(255 · p)).

Masks are shrunk to the shown size by coverage (a shown pixel is in the mask when at least
half of it is), and every mass keeps at least the shown pixel at its centre, so a small mass
never vanishes. The window presets and the per-mass measurements are worked out here, on the
image's own grid (`measure_masses`), and travel in the same file.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammoseg.io import write_text_atomic

#: Percentiles of the breast's values (pixels above the image's minimum) that bound the "dense breast" window.
DENSE_PERCENTILES = (50.0, 99.9)


def pack_uint16(image: np.ndarray) -> str:
    """base64(zlib(high-byte plane + low-byte plane of the row-wise differences)); see the module docstring."""
    values = image.astype(np.int32)
    delta = (np.diff(values, axis=1, prepend=0) & 0xFFFF).astype(np.uint16)
    planes = np.concatenate([(delta >> 8).astype(np.uint8).ravel(), (delta & 0xFF).astype(np.uint8).ravel()])
    return base64.b64encode(zlib.compress(planes.tobytes(), 6)).decode("ascii")


def unpack_uint16(text: str, shape: tuple[int, int]) -> np.ndarray:
    """The inverse of `pack_uint16` (what the page does in JavaScript)."""
    planes = np.frombuffer(zlib.decompress(base64.b64decode(text)), np.uint8).reshape(2, *shape)
    delta = (planes[0].astype(np.uint32) << 8) | planes[1]
    return (np.cumsum(delta, axis=1) & 0xFFFF).astype(np.uint16)


def pack_uint8(array: np.ndarray) -> str:
    """base64(zlib(bytes)) of a uint8 array, row after row."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array, np.uint8).tobytes(), 6)).decode("ascii")


def shrink_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The mask on a `size` (rows, columns) grid: covered at least half, plus each mass's centre pixel."""
    if mask.shape == size:
        return mask.astype(bool)
    cover = cv2.resize(mask.astype(np.float32), size[::-1], interpolation=cv2.INTER_AREA)
    shrunk = cover >= 0.5
    n, _, _, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    sy, sx = size[0] / mask.shape[0], size[1] / mask.shape[1]
    for cx, cy in centroids[1:n]:
        shrunk[min(size[0] - 1, int((cy + 0.5) * sy)), min(size[1] - 1, int((cx + 0.5) * sx))] = True
    return shrunk


def window_presets(image: np.ndarray, window: str) -> list[dict[str, Any]]:
    """Named [low, high] windows on the image's values, the first the default.

    The values are those predict read: a DICOM already windowed to 0…65535 by its own window
    (or mammoseg's fallback window), a prepared PNG as prepare wrote it. So the first preset,
    the whole 0…max range, *is* the DICOM window predict used; "full range" spans the values
    present; "dense breast" the bright half of the breast (its `DENSE_PERCENTILES`).
    """
    top = 255 if image.dtype == np.uint8 else 65535
    names = {"voi_lut_sequence": "DICOM VOI LUT", "fallback": "mammoseg's window"}
    first = "DICOM window" if window.startswith("window") else names.get(window, "as prepared")
    lo, hi = int(image.min()), int(image.max())
    breast = image[image > lo]
    dense = np.percentile(breast, DENSE_PERCENTILES) if breast.size else np.array([lo, hi])
    d_lo, d_hi = int(round(float(dense[0]))), int(round(float(dense[1])))
    presets = [{"name": first, "low": 0, "high": top}, {"name": "full range", "low": lo, "high": max(hi, lo + 1)},
               {"name": "dense breast", "low": d_lo, "high": max(d_hi, d_lo + 1)}]
    return presets


def _feret_px(component: np.ndarray, spacing: tuple[float, float]) -> float:
    """Largest distance in mm (in pixels with spacing (1, 1)) between the outer corners of a component's pixels."""
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    corners = np.concatenate([points + (dx, dy) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
    hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    hull *= (spacing[1], spacing[0])  # x is a column, y a row
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1)).max())


def measure_masses(pred: np.ndarray, prob: np.ndarray | None, spacing: tuple[float, float] | None) -> list[dict]:
    """Per predicted mass (8-connected component, largest first): area in px and mm², max Feret diameter
    in px and mm (between the pixels' outer corners), mean probability, and its box [x0, y0, x1, y1]."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(pred.astype(np.uint8), connectivity=8)
    masses = []
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        component = (labels[y:y + h, x:x + w] == k).astype(np.uint8)
        feret_px = _feret_px(component, (1.0, 1.0))
        mass = {"area_px": area, "feret_px": round(feret_px, 2), "box": [x, y, x + w, y + h],
                "area_mm2": None, "feret_mm": None, "prob_mean": None}
        if spacing is not None:
            mass["area_mm2"] = round(area * spacing[0] * spacing[1], 2)
            mass["feret_mm"] = round(_feret_px(component, spacing), 2)
        if prob is not None:
            mass["prob_mean"] = round(float(prob[y:y + h, x:x + w][component > 0].mean()), 3)
        masses.append(mass)
    masses.sort(key=lambda m: (-m["area_px"], m["box"][1], m["box"][0]))
    return [{"n": i + 1, **m} for i, m in enumerate(masses)]


def case_script(name: str, payload: dict[str, Any]) -> str:
    """The text of ``full/<name>.js``."""
    return f"MAMMOSEG_CASE({json.dumps(name)}, {json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n"


def write_case_script(path: Path, name: str, payload: dict[str, Any]) -> None:
    """Write ``full/<name>.js`` atomically."""
    write_text_atomic(path, case_script(name, payload))



