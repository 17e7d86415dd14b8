"""One case's pictures: a thumbnail overlay and the full-size layers the case page stacks.

Everything is shown on one grid, the image's: the prepared grid when a prepared folder
provides the image (a prediction or probability map on the original grid is mapped onto it
with the manifest's pad/resize plan, as `evaluate` does), else the prediction's own grid.
Layers larger than `max_side` on their long side are shrunk to it (area averaging for the
image, contours traced at full size and scaled, so a small mass never vanishes).

Files per case (`f` is the case's file name): ``thumbs/<f>.png`` (RGB, long side
`THUMB_SIDE`) and ``full/<f>.js``: the image's 16-bit values, the masks and the probability
map for the case page to draw (`mammoseg.view.casedata`).

A DICOM image's header completes what the prepared folder would have said: patient, view,
side and pixel spacing (read in the same pass as its pixels). Areas are pixels of the shown
grid, and mm² where the pixel spacing is known (`Layers.spacing`: the original spacing, scaled
by the pad/resize plan on the prepared grid).

Colours: Okabe–Ito blue for the reference and orange for the prediction, a pair that
readers with any common colour-vision deficiency tell apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammoseg.dicom import Mammogram, read_mammogram
from mammoseg.dicom import ReadLimits
from mammoseg.dicom.pixels import read_dataset
from mammoseg.evaluation.scoring import score_pair
from mammoseg.geometry import apply_to_image, apply_to_mask
from mammoseg.io import read_png, write_png
from mammoseg.view.casedata import measure_masses, pack_uint8, pack_uint16, shrink_mask, window_presets, write_case_script
from mammoseg.view.collect import Case

REF_RGB = (0x00, 0x72, 0xB2)  # Okabe–Ito blue
PRED_RGB = (0xE6, 0x9F, 0x00)  # Okabe–Ito orange
THUMB_SIDE = 256  # shown at half size in the list, at full size on demand
DEFAULT_MAX_SIDE = 2048
LESION_IOU = 0.2


@dataclass
class Layers:
    """A case's arrays on one grid: the image's own values (uint8 or uint16, as predict read them),
    boolean masks (None when unknown), probability in [0, 1]."""

    image: np.ndarray | None
    ref: np.ndarray | None
    pred: np.ndarray
    prob: np.ndarray | None
    spacing: tuple[float, float] | None = None  # (row, column) mm of one pixel of this grid, when known
    window: str = ""  # how the image's values were windowed: a DICOM's window kind, or "" (a PNG as prepared)

    @property
    def shape(self) -> tuple[int, int]:
        return self.pred.shape  # every layer has been brought onto this grid

    def area_mm2(self, mask: np.ndarray | None) -> float | None:
        """The mask's area in mm² (None without a mask or a known pixel spacing)."""
        if mask is None or self.spacing is None:
            return None
        return round(int(np.count_nonzero(mask)) * self.spacing[0] * self.spacing[1], 2)


def _read_image(path: Path) -> tuple[np.ndarray, Mammogram | None]:
    """The grey image as predict reads it (a PNG's own 8 or 16 bits, a DICOM windowed to 16 bits),
    and the DICOM's facts (patient, view, side, spacing)."""
    mammogram = None if path.suffix.lower() == ".png" else read_mammogram(path)
    pixels = read_png(path) if mammogram is None else mammogram.pixels
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected an 8- or 16-bit grey image, got {pixels.dtype} {pixels.shape}")
    return pixels, mammogram


def grey8(image: np.ndarray) -> np.ndarray:
    """8 bits of a uint8/uint16 image for pictures drawn here (the thumbnail)."""
    return (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image


def study_date(path: Path | None) -> str:
    """A DICOM image's Study Date as YYYY-MM-DD ("" for a PNG, or when the header has none)."""
    if path is None or path.suffix.lower() == ".png":
        return ""
    value = str(read_dataset(path, ReadLimits()).get("StudyDate", "") or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _complete_from_header(case: Case, mammogram: Mammogram | None) -> None:
    """Patient, view, side and pixel spacing from a DICOM header where nothing else gave them."""
    if mammogram is None:
        return
    case.patient = case.patient or mammogram.patient_id
    case.view = case.view or mammogram.view
    case.laterality = case.laterality or mammogram.laterality
    case.study_date = case.study_date or study_date(mammogram.path)
    if case.spacing is None and case.plan is None:  # the header's spacing is of the image as read
        case.spacing = mammogram.pixel_spacing


def grid_spacing(case: Case, shape: tuple[int, int]) -> tuple[float, float] | None:
    """mm per pixel of the shown grid: the case's spacing on its original grid, scaled by the
    pad/resize plan on the prepared grid; None when unknown or the grid is neither."""
    plan, spacing = case.plan, case.spacing
    if spacing is None:
        return None
    if plan is None:
        return spacing
    if shape == (plan.size, plan.size):
        scale = plan.padded_height / plan.size
        return (spacing[0] * scale, spacing[1] * scale)
    return spacing if shape == (plan.orig_height, plan.orig_width) else None


def _onto_grid(array: np.ndarray, shape: tuple[int, int], case: Case, path: Path | None, what: str) -> np.ndarray:
    """`array` on the display grid: as it is, or mapped from the original grid with the case's plan."""
    if array.shape == shape:
        return array
    plan = case.plan
    if plan is not None and array.shape == (plan.orig_height, plan.orig_width) and shape == (plan.size, plan.size):
        if array.dtype == bool:
            return apply_to_mask(array.astype(np.uint8), plan) != 0
        return apply_to_image(array, plan)
    raise ValueError(
        f"{path or case.id}: {what} is {array.shape[0]}×{array.shape[1]}, the image is {shape[0]}×{shape[1]}; "
        "mammoseg view shows them together only on one grid (or the prepared grid with its manifest)"
    )


def load_layers(case: Case) -> Layers:
    """Read a case's image, masks and probability map and bring them onto one grid; a DICOM image's
    header completes the case's patient, view, side and pixel spacing."""
    image, mammogram = _read_image(case.image) if case.image is not None else (None, None)
    _complete_from_header(case, mammogram)
    ref = read_png(case.ref) != 0 if case.ref is not None else None
    pred = read_png(case.pred) != 0 if case.pred is not None else None
    prob = read_png(case.prob).astype(np.float32) / 65535.0 if case.prob is not None else None
    present = [a.shape for a in (image, ref, pred) if a is not None]
    if not present:
        raise FileNotFoundError(f"{case.id}: no image, reference or predicted mask found")
    grid = present[0]
    if pred is None:
        pred = np.zeros(grid, bool)  # evaluated with --allow-missing: an empty prediction
    ref = _onto_grid(ref, grid, case, case.ref, "reference mask") if ref is not None else None
    pred = _onto_grid(pred, grid, case, case.pred, "predicted mask")
    prob = _onto_grid(prob, grid, case, case.prob, "probability map") if prob is not None else None
    return Layers(image, ref, pred, prob, grid_spacing(case, grid), mammogram.window if mammogram is not None else "")


def outcome(ref_empty: int | None, pred_empty: int | None) -> str:
    """TP/FN/FP/TN for "mass present": reference mass and predicted mass, found or not."""
    if ref_empty is None or pred_empty is None:
        return ""
    return {(0, 0): "TP", (0, 1): "FN", (1, 0): "FP", (1, 1): "TN"}[(int(ref_empty), int(pred_empty))]


def case_scores(case: Case, layers: Layers) -> dict[str, Any]:
    """The evaluation's numbers for the case; computed from the shown masks when it was not evaluated."""
    scores = dict(case.scores)
    if "dice" not in scores and layers.ref is not None:
        scores.update(score_pair(case.id, case.patient, layers.pred, layers.ref, LESION_IOU))
    scores.setdefault("pred_empty", int(not layers.pred.any()))
    if layers.ref is not None:
        scores.setdefault("ref_empty", int(not layers.ref.any()))
    return scores


def _contours(mask: np.ndarray, scale: float) -> list[np.ndarray]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [np.round((c.astype(np.float32) + 0.5) * scale - 0.5).astype(np.int32) for c in found]


def _resize(array: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    return array if array.shape[:2] == size else cv2.resize(array, size[::-1], interpolation=interpolation)


def thumbnail(layers: Layers, side: int = THUMB_SIDE) -> np.ndarray:
    """RGB overlay: the image shrunk to at most `side` on its long side, reference then prediction contours."""
    h, w = layers.shape
    scale = min(1.0, side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    grey = _resize(grey8(layers.image), size, cv2.INTER_AREA) if layers.image is not None else np.zeros(size, np.uint8)
    rgb = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    for mask, colour in ((layers.ref, REF_RGB), (layers.pred, PRED_RGB)):
        if mask is not None and mask.any():
            cv2.drawContours(rgb, _contours(mask, scale), -1, colour, 1, lineType=cv2.LINE_8)
    return rgb


def shown_size(shape: tuple[int, int], max_side: int | None) -> tuple[tuple[int, int], float]:
    """The (rows, columns) the site keeps of a `shape` grid, and the scale: at most `max_side`
    on the long side (None: full resolution)."""
    h, w = shape
    scale = 1.0 if max_side is None else min(1.0, max_side / max(h, w))
    return (max(1, round(h * scale)), max(1, round(w * scale))), scale


def case_payload(layers: Layers, size: tuple[int, int]) -> dict[str, Any]:
    """What ``full/<f>.js`` holds: the arrays at `size`, the window presets and the predicted masses."""
    payload: dict[str, Any] = {"w": size[1], "h": size[0], "grid_w": layers.shape[1], "grid_h": layers.shape[0],
                               "pixels": None, "top": 0, "presets": [], "ref": None, "prob": None,
                               "spacing": list(layers.spacing) if layers.spacing else None}
    if layers.image is not None:
        image = _resize(layers.image, size, cv2.INTER_AREA)
        payload.update(pixels=pack_uint16(image), top=255 if image.dtype == np.uint8 else 65535,
                       presets=window_presets(image, layers.window))
    if layers.ref is not None:
        payload["ref"] = pack_uint8(shrink_mask(layers.ref, size))
    payload["pred"] = pack_uint8(shrink_mask(layers.pred, size))
    if layers.prob is not None:
        prob = np.clip(_resize(layers.prob.astype(np.float32), size, cv2.INTER_LINEAR), 0.0, 1.0)
        payload["prob"] = pack_uint8(np.round(prob * 255).astype(np.uint8))
    payload["masses"] = measure_masses(layers.pred, layers.prob, layers.spacing)
    return payload


def write_case_files(out: Path, name: str, layers: Layers, max_side: int | None = DEFAULT_MAX_SIDE) -> dict[str, Any]:
    """Write the thumbnail and ``full/<name>.js`` of one case; returns what the data table says of them."""
    size, _ = shown_size(layers.shape, max_side)
    thumb = thumbnail(layers)
    write_png(out / "thumbs" / f"{name}.png", thumb)
    payload = case_payload(layers, size)
    write_case_script(out / "full" / f"{name}.js", name, payload)
    masses = payload["masses"]
    prob_max = round(float(layers.prob.max()), 3) if layers.prob is not None else None
    return {"w": size[1], "h": size[0], "tw": thumb.shape[1], "th": thumb.shape[0], "grid_w": layers.shape[1],
            "grid_h": layers.shape[0], "n_masses": len(masses), "prob_max": prob_max}
