"""Manifest source: a CSV listing your own images and masks.

Columns `image, mask, patient_id` are required; `view, laterality, id` are optional.
Paths are absolute or relative to the CSV's folder. Images are DICOM or 8/16-bit PNG;
masks are PNG (any non-zero pixel is mass) and an empty `mask` means the image has no mass.
This is how a research group points mammoseg at its own archive.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from mammoseg.io import missing_columns, read_csv
from mammoseg.manifest import safe_id
from mammoseg.sources.records import (
    NoMask,
    PngMask,
    Record,
    normalise_laterality,
    normalise_view,
)

REQUIRED_COLUMNS = ("image", "mask", "patient_id")


def find_manifest_csvs(src: str | os.PathLike, csv: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The CSV(s) to read: `csv` if given, `src` itself if it is a file, else the one CSV in `src`."""
    if csv:
        paths = [Path(p) for p in csv]
    else:
        src = Path(src)
        if src.is_file():
            paths = [src]
        elif src.is_dir():
            found = sorted(src.glob("*.csv"))
            if len(found) != 1:
                listing = ", ".join(p.name for p in found) or "none"
                raise ValueError(
                    f"{src}: expected exactly one manifest CSV in the folder (found {listing}); "
                    "name it with --csv or pass the CSV itself as --src"
                )
            paths = found
        else:
            raise FileNotFoundError(f"{src}: no such file or folder")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such manifest CSV")
    return paths


def _resolve(base: Path, value: str) -> Path:
    path = Path(value.strip())
    return path if path.is_absolute() else base / path


def iter_manifest_records(
    src: str | os.PathLike, csv: Sequence[str | os.PathLike] = ()
) -> Iterator[Record]:
    """Records for every row of the manifest CSV(s); a missing required column is an error."""
    for csv_path in find_manifest_csvs(src, csv):
        csv_path = Path(os.path.abspath(csv_path))
        rows = read_csv(csv_path)
        error = missing_columns(csv_path, list(rows[0]) if rows else _header_only(csv_path), REQUIRED_COLUMNS)
        if error is not None:
            raise error
        base = csv_path.parent
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            image_value = (row.get("image") or "").strip()
            image = _resolve(base, image_value) if image_value else csv_path
            mask_value = (row.get("mask") or "").strip()
            raw_id = (row.get("id") or "").strip() or Path(image_value).stem
            problem = "" if image_value else f"{csv_path} line {line}: empty image column"
            yield Record(
                id=safe_id(raw_id or f"line{line}"),
                image=image,
                patient_id=(row.get("patient_id") or "").strip(),
                mask=PngMask(_resolve(base, mask_value)) if mask_value else NoMask(),
                view=normalise_view(row.get("view") or ""),
                laterality=normalise_laterality(row.get("laterality") or ""),
                source="manifest",
                problem=problem,
            )


def _header_only(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])
