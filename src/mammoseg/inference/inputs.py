"""What `predict` reads: prepared folders (rows of their manifest), DICOM and raster files or folders.

`iter_inputs` expands the command line into `InputItem`s with unique, file-name-safe ids
(`mammoseg.manifest.UniqueIds`, the rule every stage uses) as it walks the folders — a
stream, so prediction over an archive of 10⁵ files starts at once and holds no list of
them. Each item carries its place in the stream (`seq`, the order of predictions.csv) and a
stable key (`mammoseg.shards`: which shard takes it, and how a resumed run recognises it).
`load_item` turns one into model input. A DICOM or a PNG/TIFF mammogram (8- or 16-bit) given
directly is read and standardised by the same functions `prepare` uses for a manifest source
(`mammoseg.prepare.image.read_image`: DICOM windowed, 8-bit ×257; `mammoseg.geometry.standardise`),
so it reaches the models bit-identical to its prepared image, and its mask is written on its own
grid. A folder yields its DICOM files and its PNG/TIFF images (keep reference masks elsewhere). `prefetched` reads the next batch in a thread while the current one runs through the models.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset

from mammoseg.dicom.bounded import read_dicom
from mammoseg.geometry import PadResize, standardise
from mammoseg.io import as_uint16, read_png, special_file_kind
from mammoseg.layouts import PreparedLayout
from mammoseg.manifest import CROP_COLUMNS, MANIFEST_COLUMNS, UniqueIds, load_manifest
from mammoseg.prepare.image import RASTER_SUFFIXES, read_image

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
SPLIT_CHOICES = (None, "all", "train", "holdout")


@dataclass
class InputItem:
    """One image to predict: a prepared-folder row, a DICOM file or a raster (PNG/TIFF) file."""

    id: str
    input: str
    kind: str  # "prepared", "dicom" or "raster"
    row: dict[str, str] | None = None
    data_dir: Path | None = None
    seq: int = 0  # place in the stream of inputs: the order of predictions.csv
    key: str = ""  # stable across machines and runs (the input as named on the command line)


@dataclass
class LoadedItem:
    """An input read and ready: the model's input, the image on the output grid, and what
    maps a prediction back onto it."""

    item: InputItem
    model_input: np.ndarray  # uint16, size × size
    display: np.ndarray  # uint16 image on the output grid
    plan: PadResize | None = None  # DICOM inputs: how the original was standardised
    reference: np.ndarray | None = None  # uint8 0/255 on the output grid, when known
    dataset: Dataset | None = None  # DICOM header, for DICOM SEG


@dataclass
class InputError:
    """An input that could not be used, and why (a row of errors.csv)."""

    input: str
    reason: str
    seq: int = 0
    key: str = ""  # the item's key, when the error is about an item


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


def _manifest_header(path: Path) -> list[str]:
    manifest = PreparedLayout(path).manifest
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def is_prepared_folder(path: Path) -> bool:
    """A folder with a manifest.csv in the prepared layout (not, e.g., a source CSV of DICOMs)."""
    header = _manifest_header(path)
    return all(c in header for c in MANIFEST_COLUMNS)


def crop_mismatch(path: Path, breast_crop: bool) -> str | None:
    """Why a prepared folder's images differ from what models trained with (or without) the breast crop
    see, or None when they match (or `path` is no prepared folder). Its images are predicted as
    they are; a DICOM or raster input is standardised the models' way."""
    header = _manifest_header(path)
    if not all(c in header for c in MANIFEST_COLUMNS):
        return None
    cropped = all(c in header for c in CROP_COLUMNS)
    if cropped == breast_crop:
        return None
    return (f"{path}: prepared {'with' if cropped else 'without'} the breast crop, but the run's models were trained "
            f"on images prepared {'with' if breast_crop else 'without'} it; its images are predicted as they are, "
            f"which may lower accuracy (prepare the source again with {'--crop' if breast_crop else '--no-crop'})")


def _dicom_files(folder: Path) -> Iterator[Path | InputError]:
    """DICOM files under `folder`, hidden entries skipped, in path order — walked lazily. A special
    file (a FIFO, socket or device) comes as an `InputError`: opening one could block forever."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith("."):
                continue
            special = special_file_kind(path)
            if special:
                yield InputError(str(path), f"{special}, not a regular file; skipped")
            elif is_dicom_file(path) or path.suffix.lower() in RASTER_SUFFIXES:
                yield path


def _expand(raw: str | os.PathLike, split: str | None, ids: UniqueIds) -> Iterator[InputItem | InputError]:
    """The items (or the error) one command-line input stands for, in order, `seq` not yet set."""
    path = Path(raw)
    if not path.exists():
        yield InputError(str(path), "no such file or folder")
    elif path.is_dir() and is_prepared_folder(path):
        for row in load_manifest(path, split=None if split in (None, "all") else split):
            yield InputItem(ids.take(row["id"]), str(path / row["image"]), "prepared", row, path,
                            key=f"{Path(raw).as_posix()}#{row['id']}")
    elif path.is_dir():
        found = False
        for file in _dicom_files(path):
            found = True
            if isinstance(file, InputError):
                yield file
                continue
            yield InputItem(ids.take(file.stem), str(file), _file_kind(file), key=f"{Path(raw).as_posix()}/"
                            f"{file.relative_to(path).as_posix()}")
        if not found:
            yield InputError(str(path), "folder has no manifest.csv, no DICOM files and no PNG/TIFF images")
    elif special_file_kind(path):
        yield InputError(str(path), f"{special_file_kind(path)}, not a regular file")
    else:
        yield InputItem(ids.take(path.stem), str(path), _file_kind(path), key=path.as_posix())


def _file_kind(path: Path) -> str:
    return "raster" if path.suffix.lower() in RASTER_SUFFIXES else "dicom"


def iter_inputs(inputs: Sequence[str | os.PathLike], split: str | None = None) -> Iterator[InputItem | InputError]:
    """Prepared folders, DICOM folders and DICOM files as a stream of items with unique ids, in
    command-line order (folders walked in path order); an input that does not exist or holds
    nothing usable comes as an `InputError` in its place. `split` (`train`, `holdout`,
    `all`/None) selects rows of prepared folders only."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}; expected holdout, train or all")
    ids = UniqueIds()
    seq = 0
    for raw in inputs:
        for entry in _expand(raw, split, ids):
            entry.seq = seq
            seq += 1
            yield entry


def collect_inputs(inputs: Sequence[str | os.PathLike], split: str | None = None) -> tuple[list[InputItem], list[InputError]]:
    """`iter_inputs` as two lists: the items and the errors."""
    entries = list(iter_inputs(inputs, split))
    return [e for e in entries if isinstance(e, InputItem)], [e for e in entries if isinstance(e, InputError)]


def _load_prepared(item: InputItem, size: int) -> LoadedItem:
    image = as_uint16(read_png(item.input), item.input)
    reference = None
    mask_rel = (item.row or {}).get("mask", "")
    if mask_rel and item.data_dir is not None and (item.data_dir / mask_rel).is_file():
        reference = read_png(item.data_dir / mask_rel)
        if reference.shape != image.shape:
            raise ValueError(f"{item.data_dir / mask_rel}: mask shape {reference.shape} != image shape {image.shape}")
        reference = np.where(reference > 0, 255, 0).astype(np.uint8)
    model_input = image
    if image.shape != (size, size):  # prepared at another size than the run was trained at
        if image.shape[0] != image.shape[1]:
            raise ValueError(f"{item.input}: prepared image is not square ({image.shape})")
        model_input = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return LoadedItem(item, model_input, image, reference=reference)


def load_item(item: InputItem, size: int, want_dataset: bool = False, crop: bool = False) -> LoadedItem:
    """Read one input and turn it into the model's size × size uint16 input; a file given directly
    is cut to the breast first when `crop` (the models were trained on such images)."""
    if item.kind == "prepared":
        return _load_prepared(item, size)
    pixels, _meta = read_image(Path(item.input))
    standard = standardise(pixels, size, crop=crop)
    dataset = read_dicom(item.input, stop_before_pixels=True) if want_dataset and item.kind == "dicom" else None
    return LoadedItem(item, standard.image, pixels, plan=standard.plan, dataset=dataset)


def _load_batch(items: Sequence[InputItem], size: int, want_dataset: bool,
                crop: bool) -> tuple[list[LoadedItem], list[InputError]]:
    loaded, errors = [], []
    for item in items:
        try:
            loaded.append(load_item(item, size, want_dataset=want_dataset and item.kind == "dicom", crop=crop))
        except Exception as exc:  # one broken input must not stop the others
            errors.append(InputError(item.input, f"{type(exc).__name__}: {exc}", item.seq, item.key))
    return loaded, errors


def prefetched(
    items: Iterable[InputItem], size: int, batch_size: int, want_dataset: bool = False, crop: bool = False
) -> Iterator[tuple[list[LoadedItem], list[InputError], int]]:
    """(loaded items, load errors, items in the batch) per batch of the stream `items`; the next
    batch is read in a thread while the caller works on the current one. `crop`: as `load_item`."""
    stream = iter(items)
    batches = iter(lambda: list(itertools.islice(stream, batch_size)), [])
    with ThreadPoolExecutor(max_workers=1) as pool:
        batch = next(batches, None)
        pending = pool.submit(_load_batch, batch, size, want_dataset, crop) if batch else None
        while batch:
            loaded, errors = pending.result()  # type: ignore[union-attr]
            following = next(batches, None)
            if following:
                pending = pool.submit(_load_batch, following, size, want_dataset, crop)
            yield loaded, errors, len(batch)
            batch = following
