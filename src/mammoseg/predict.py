"""Fold-ensemble prediction: a trained run's fold models → masks on prepared or DICOM images.

The paper's inference: every fold model's sigmoid *probability* is averaged (not the
thresholded masks), then the average is thresholded at 0.5. DICOM inputs are windowed,
padded and resized exactly as `prepare` does, and the probability is mapped back onto
the original pixel grid before thresholding, so the mask matches the source DICOM pixel
for pixel (and can be written as a DICOM Segmentation referencing it).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mammoseg.distributed import resolve_device
from mammoseg.io import prepare_output_dir, read_png, write_csv_atomic, write_png, write_text_atomic

log = logging.getLogger(__name__)

PREDICTIONS_COLUMNS = ("id", "input", "mask", "height", "width", "grid")
ERRORS_COLUMNS = ("input", "reason")
#: Folders and files `predict` owns inside a prediction folder (cleared by `overwrite=True`).
OUTPUT_ENTRIES = ("masks", "prob", "overlays", "seg", "predictions.csv", "errors.csv", "predict.json")
#: Overlays of large originals are shrunk so their longer side is at most this.
OVERLAY_MAX_SIDE = 1024
#: Overlay colours (RGB): predicted contour, reference contour.
PRED_COLOUR = (255, 40, 40)
REF_COLOUR = (40, 255, 40)
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


# --------------------------------------------------------------------------- ensemble core


@dataclass
class EnsembleMember:
    """One fold model with the input normalisation it was trained with."""

    model: torch.nn.Module
    norm: Mapping[str, float]
    in_channels: int = 1
    source: str = ""


def member_probability(member: EnsembleMember, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Sigmoid probability (B,1,H,W) of one model for images (B,1,H,W) in [0,1].

    With `tta` the horizontally flipped image is predicted too and its probability is
    flipped back before the two are averaged.
    """
    from mammoseg.checkpoint import normalise_batch

    x = normalise_batch(images, member.norm, member.in_channels)
    prob = torch.sigmoid(member.model(x).float())
    if tta:
        flipped = torch.sigmoid(member.model(torch.flip(x, dims=[-1])).float())
        prob = 0.5 * (prob + torch.flip(flipped, dims=[-1]))
    return prob


def ensemble_probability(
    members: Sequence[EnsembleMember], images: torch.Tensor, tta: bool = False
) -> torch.Tensor:
    """The mean of the members' probabilities (the paper's fold ensemble), (B,1,H,W) float32."""
    if not members:
        raise ValueError("ensemble_probability needs at least one model")
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (B,1,H,W), got {tuple(images.shape)}")
    total = None
    for member in members:
        prob = member_probability(member, images, tta=tta)
        if prob.shape != images.shape:
            raise ValueError(
                f"{member.source or 'model'}: output shape {tuple(prob.shape)} != input {tuple(images.shape)}"
            )
        total = prob if total is None else total + prob
    return total / len(members)


def threshold_probability(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """uint8 0/255 mask of the pixels whose probability is at least `threshold`."""
    return np.where(prob >= threshold, 255, 0).astype(np.uint8)


def find_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Every `fold*/best.pt` of a run, in fold order; a clear error when there is none."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")

    def fold_key(p: Path) -> tuple[int, str]:
        digits = re.sub(r"\D", "", p.parent.name)
        return (int(digits) if digits else 10**9, p.parent.name)

    paths = sorted((p for p in run.glob("fold*/best.pt") if p.is_file()), key=fold_key)
    if not paths:
        raise FileNotFoundError(f"{run}: no fold*/best.pt checkpoints; has this run been trained (`mammoseg train`)?")
    return paths


def load_ensemble(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[list[EnsembleMember], int]:
    """Load every fold's best model of a run; returns the members and their common image size."""
    from mammoseg.checkpoint import load_fold_model

    members: list[EnsembleMember] = []
    sizes: dict[str, int] = {}
    for path in find_checkpoints(run_dir):
        model, ckpt = load_fold_model(path, map_location=device)
        spec = ckpt["model_spec"]
        size = _checkpoint_image_size(ckpt, path)
        sizes[str(path)] = size
        members.append(EnsembleMember(model=model, norm=ckpt["norm"], in_channels=int(spec["in_channels"]), source=str(path)))
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{run_dir}: fold checkpoints were trained at different image sizes: {sizes}")
    return members, next(iter(sizes.values()))


def _checkpoint_image_size(ckpt: Mapping[str, Any], path: Path) -> int:
    size = ckpt.get("image_size")
    if size is None:
        config = ckpt.get("config") or {}
        size = config.get("image_size")
        if size is None and isinstance(config.get("data"), Mapping):
            size = config["data"].get("image_size")
    if size is None:
        raise ValueError(f"{path}: checkpoint does not record the image size it was trained on")
    return int(size)


# --------------------------------------------------------------------------- inputs


@dataclass
class InputItem:
    """One image to predict: a prepared-folder row or a DICOM file."""

    id: str
    input: str
    kind: str  # "prepared" or "dicom"
    row: dict[str, str] | None = None
    data_dir: Path | None = None


@dataclass
class LoadedItem:
    item: InputItem
    model_input: np.ndarray  # uint16, size x size
    display: np.ndarray  # uint16 image on the output grid
    plan: Any = None  # geometry.PadResize for DICOM inputs
    reference: np.ndarray | None = None  # uint8 0/255 on the output grid, when known
    dataset: Any = None  # pydicom header, for DICOM SEG
    extra: dict[str, Any] = field(default_factory=dict)


def is_dicom_file(path: Path) -> bool:
    """A DICOM suffix, or the 'DICM' marker of a Part 10 file at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_prepared_folder(path: Path) -> bool:
    """A folder with a manifest.csv in the prepared layout (not, e.g., a source CSV of DICOMs)."""
    from mammoseg.manifest import MANIFEST_COLUMNS

    manifest = path / "manifest.csv"
    if not manifest.is_file():
        return False
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), [])
    return all(c in header for c in MANIFEST_COLUMNS)


def _safe_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


def collect_inputs(
    inputs: Sequence[str | os.PathLike], split: str | None = None
) -> tuple[list[InputItem], list[dict[str, str]]]:
    """Expand prepared folders, DICOM folders and DICOM files into items with unique ids.

    `split` (`train`, `holdout`, `all`/None) selects rows of prepared folders only.
    Inputs that do not exist or hold nothing usable come back as error rows.
    """
    from mammoseg.manifest import load_manifest

    if split not in (None, "all", "train", "holdout"):
        raise ValueError(f"unknown split {split!r}; expected holdout, train or all")
    items: list[InputItem] = []
    errors: list[dict[str, str]] = []
    used: set[str] = set()

    def unique(name: str) -> str:
        base = _safe_id(name)
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        return candidate

    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            errors.append({"input": str(path), "reason": "no such file or folder"})
        elif path.is_dir() and is_prepared_folder(path):
            rows = load_manifest(path, split=None if split in (None, "all") else split)
            for row in rows:
                items.append(InputItem(unique(row["id"]), str(path / row["image"]), "prepared", row, path))
        elif path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and is_dicom_file(p)
            )
            if not files:
                errors.append({"input": str(path), "reason": "folder has no manifest.csv and no DICOM files"})
            for p in files:
                items.append(InputItem(unique(p.stem), str(p), "dicom"))
        else:
            items.append(InputItem(unique(path.stem), str(path), "dicom"))
    return items, errors


def _to_uint16(image: np.ndarray, where: str) -> np.ndarray:
    if image.ndim != 2:
        raise ValueError(f"{where}: expected a grey image, got shape {image.shape}")
    if image.dtype == np.uint16:
        return image
    if image.dtype == np.uint8:
        return image.astype(np.uint16) * 257
    raise ValueError(f"{where}: expected a uint16 (or uint8) image, got {image.dtype}")


def load_item(item: InputItem, size: int, want_dataset: bool = False) -> LoadedItem:
    """Read one input and turn it into the model's size x size uint16 input."""
    if item.kind == "prepared":
        image = _to_uint16(read_png(item.input), item.input)
        reference = None
        mask_rel = (item.row or {}).get("mask", "")
        if mask_rel and item.data_dir is not None and (item.data_dir / mask_rel).is_file():
            reference = read_png(item.data_dir / mask_rel)
            if reference.shape != image.shape:
                raise ValueError(f"{item.data_dir / mask_rel}: mask shape {reference.shape} != image shape {image.shape}")
            reference = np.where(reference > 0, 255, 0).astype(np.uint8)
        model_input = image
        if image.shape != (size, size):
            if image.shape[0] != image.shape[1]:
                raise ValueError(f"{item.input}: prepared image is not square ({image.shape})")
            model_input = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        return LoadedItem(item, model_input, image, reference=reference)

    from mammoseg.dicom import read_mammogram
    from mammoseg.geometry import apply_to_image, chest_wall_side, plan_pad_resize

    mammo = read_mammogram(item.input)
    pixels = mammo.pixels
    side = chest_wall_side(pixels)
    plan = plan_pad_resize(pixels.shape[0], pixels.shape[1], side, size=size)
    model_input = apply_to_image(pixels, plan)
    dataset = None
    if want_dataset:
        import pydicom

        dataset = pydicom.dcmread(item.input, stop_before_pixels=True)
    return LoadedItem(item, model_input, pixels, plan=plan, dataset=dataset)


# --------------------------------------------------------------------------- outputs


def overlay_image(
    image: np.ndarray, pred: np.ndarray, reference: np.ndarray | None = None, max_side: int = OVERLAY_MAX_SIDE
) -> np.ndarray:
    """RGB uint8 picture: the image (8-bit) with the predicted and reference contours drawn.

    Large images are shrunk to `max_side` first so the overlay is quick to look at.
    """
    if image.dtype == np.uint16:
        grey = (image >> 8).astype(np.uint8)
    else:
        grey = image.astype(np.uint8)
    h, w = grey.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = cv2.resize(grey, new, interpolation=cv2.INTER_AREA)
        pred = cv2.resize(pred, new, interpolation=cv2.INTER_NEAREST)
        if reference is not None:
            reference = cv2.resize(reference, new, interpolation=cv2.INTER_NEAREST)
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    for mask, colour in ((reference, REF_COLOUR), (pred, PRED_COLOUR)):
        if mask is None:
            continue
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, colour, thickness)
    return rgb


def _batches(items: Sequence[InputItem], batch_size: int) -> Iterator[list[InputItem]]:
    for start in range(0, len(items), batch_size):
        yield list(items[start : start + batch_size])


def _load_batch(items: list[InputItem], size: int, want_dataset: bool) -> tuple[list[LoadedItem], list[dict[str, str]]]:
    loaded, errors = [], []
    for item in items:
        try:
            loaded.append(load_item(item, size, want_dataset=want_dataset and item.kind == "dicom"))
        except Exception as exc:  # one broken input must not stop the others
            errors.append({"input": item.input, "reason": f"{type(exc).__name__}: {exc}"})
    return loaded, errors


def _write_outputs(
    loaded: LoadedItem,
    prob_model: np.ndarray,
    out: Path,
    threshold: float,
    save_prob: bool,
    dicom_seg: bool,
) -> dict[str, Any]:
    item = loaded.item
    if loaded.plan is not None:
        from mammoseg.geometry import invert_probability

        prob = invert_probability(prob_model, loaded.plan)
        grid = "original"
    else:
        prob = prob_model
        if prob.shape != loaded.display.shape:
            prob = cv2.resize(prob, loaded.display.shape[::-1], interpolation=cv2.INTER_LINEAR)
        grid = "prepared"
    if prob.shape != loaded.display.shape:
        raise ValueError(f"{item.input}: probability shape {prob.shape} != image shape {loaded.display.shape}")
    mask = threshold_probability(prob, threshold)
    write_png(out / "masks" / f"{item.id}.png", mask)
    if save_prob:
        write_png(out / "prob" / f"{item.id}.png", np.round(np.clip(prob, 0.0, 1.0) * 65535).astype(np.uint16))
    write_png(out / "overlays" / f"{item.id}.png", overlay_image(loaded.display, mask, loaded.reference))
    if dicom_seg and loaded.dataset is not None:
        from mammoseg.dicom_seg import write_dicom_seg

        write_dicom_seg(mask > 0, loaded.dataset, out / "seg" / f"{item.id}.dcm")
    return {
        "id": item.id,
        "input": item.input,
        "mask": f"masks/{item.id}.png",
        "height": mask.shape[0],
        "width": mask.shape[1],
        "grid": grid,
    }


# --------------------------------------------------------------------------- driver


def predict(
    run_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    threshold: float = 0.5,
    tta: bool = False,
    save_prob: bool = False,
    dicom_seg: bool = False,
    split: str | None = None,
    batch_size: int = 4,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict masks for prepared folders and/or DICOM files with a run's fold ensemble.

    Writes the prediction folder of docs/architecture.md; returns a summary dict
    (`n_predicted`, `n_errors`, `out_dir`, `checkpoints`, ...). Broken inputs are listed in
    errors.csv and skipped; the folder must be new or empty unless `overwrite`.
    """
    from tqdm import tqdm

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if not inputs:
        raise ValueError("no inputs given")
    if dicom_seg:
        from mammoseg.dicom_seg import require_highdicom

        require_highdicom()
    out = Path(out_dir)
    dev = resolve_device(device)
    members, size = load_ensemble(run_dir, dev)
    items, errors = collect_inputs(inputs, split=split)
    prepare_output_dir(out, OUTPUT_ENTRIES, overwrite, "prediction")
    if dicom_seg and any(i.kind == "prepared" for i in items):
        log.warning("--dicom-seg: DICOM Segmentations are written for DICOM inputs only, not prepared images")

    prev_threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            batches = list(_batches(items, batch_size))
            pending: Future | None = pool.submit(_load_batch, batches[0], size, dicom_seg) if batches else None
            bar = tqdm(total=len(items), desc="predict", unit="img", disable=not progress)
            for index in range(len(batches)):
                loaded, load_errors = pending.result()  # type: ignore[union-attr]
                # Read the next batch while this one runs through the models.
                pending = pool.submit(_load_batch, batches[index + 1], size, dicom_seg) if index + 1 < len(batches) else None
                errors.extend(load_errors)
                if loaded:
                    x = torch.from_numpy(np.stack([li.model_input for li in loaded]).astype(np.float32) / 65535.0)
                    x = x.unsqueeze(1).to(dev)
                    prob = ensemble_probability(members, x, tta=tta)[:, 0].float().cpu().numpy()
                    for li, p in zip(loaded, prob):
                        try:
                            rows.append(_write_outputs(li, p, out, threshold, save_prob, dicom_seg))
                        except Exception as exc:  # e.g. an unwritable SEG for an odd header
                            errors.append({"input": li.item.input, "reason": f"{type(exc).__name__}: {exc}"})
                bar.update(len(batches[index]))
            bar.close()
    finally:
        torch.set_num_threads(prev_threads)

    for err in errors:
        warnings.warn(f"skipped {err['input']}: {err['reason']}", stacklevel=2)
    write_csv_atomic(out / "errors.csv", errors, ERRORS_COLUMNS)
    summary = {
        "run": str(Path(run_dir)),
        "checkpoints": [m.source for m in members],
        "image_size": size,
        "threshold": threshold,
        "tta": tta,
        "n_predicted": len(rows),
        "n_errors": len(errors),
        "out_dir": str(out),
    }
    write_text_atomic(out / "predict.json", json.dumps(summary, indent=2) + "\n")
    # predictions.csv last: its presence marks a finished prediction folder.
    write_csv_atomic(out / "predictions.csv", rows, PREDICTIONS_COLUMNS)
    return summary


def prediction_complete(out_dir: str | os.PathLike) -> bool:
    """True when a prediction folder was finished (predictions.csv exists and its masks do)."""
    from mammoseg.io import read_csv

    out = Path(out_dir)
    if not (out / "predictions.csv").is_file() or not (out / "predict.json").is_file():
        return False
    rows = read_csv(out / "predictions.csv")
    return all((out / r["mask"]).is_file() for r in rows)
