"""CBIS-DDSM source: the TCIA tree plus `mass_case_description_{train,test}_set.csv`.

Each CSV row is one abnormality; the rows of one full mammogram are merged into one mask.
Paths in the CSV are only trusted for their first component, the case folder (e.g.
`Mass-Training_P_00001_LEFT_CC_1`), because the files below it are named differently by
the old release (`<uid>/<uid>/000000.dcm`) and by the current TCIA download
(`<date-folder>/<n.000000-series description-nnnnn>/1-1.dcm`): every `.dcm` below the
case folder is a candidate. The CSV's ROI-mask and cropped-image columns are swapped in
places, so the mask is told apart from the crop by size when the mask is loaded.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from mammoseg.dicom.bounded import DicomReadError, read_dicom
from mammoseg.io import read_csv
from mammoseg.manifest import safe_id
from mammoseg.sources.records import (
    Record,
    RoiDicomMask,
    normalise_laterality,
    normalise_view,
)

log = logging.getLogger(__name__)

CSV_NAMES = ("mass_case_description_train_set.csv", "mass_case_description_test_set.csv")
_PATIENT = re.compile(r"P_\d+")


def _key(name: str) -> str:
    """CSV header names vary between releases (`patient_id` / `patient id`); compare them loosely."""
    return " ".join(name.replace("_", " ").lower().split())


def find_cbis_csvs(src: Path, csv: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The description CSVs: those named with `csv`, else the mass CSVs found under `src`."""
    if csv:
        paths = [Path(os.path.abspath(p)) for p in csv]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such CSV")
        return paths
    found = []
    for name in CSV_NAMES:
        hits = sorted(src.rglob(name))
        found.extend(hits)
    if not found:
        raise FileNotFoundError(
            f"{src}: no {' or '.join(CSV_NAMES)} found; name the description CSV(s) with --csv"
        )
    return found


def tree_roots(src: Path) -> list[Path]:
    """Folders that may hold the case folders: `src`, `src/CBIS-DDSM`, `src/*/CBIS-DDSM`."""
    roots = [src]
    roots += [p for p in [src / "CBIS-DDSM", *sorted(src.glob("*/CBIS-DDSM"))] if p.is_dir()]
    return roots


def _case_folder(csv_path_value: str) -> str:
    parts = [p for p in re.split(r"[\\/]+", csv_path_value.strip()) if p]
    if parts and parts[0] == "CBIS-DDSM":
        parts = parts[1:]
    return parts[0] if parts else ""


class _Tree:
    """Finds case folders and their DICOM files below the tree roots (cached)."""

    def __init__(self, src: Path):
        self.src = src
        self.roots = tree_roots(src)
        self._files: dict[str, list[Path] | None] = {}

    def folder(self, name: str) -> Path | None:
        for root in self.roots:
            candidate = root / name
            if candidate.is_dir():
                return candidate
        return None

    def dicoms(self, name: str) -> list[Path] | None:
        """Every `.dcm` below the case folder `name`, or None when there is no such folder."""
        if name not in self._files:
            folder = self.folder(name) if name else None
            self._files[name] = (
                None if folder is None else sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".dcm" and p.is_file())
            )
        return self._files[name]

    def missing(self, name: str) -> str:
        where = " or ".join(str(r) for r in self.roots)
        return f"no case folder {name!r} under {where}"


def _pick_full_image(tree: _Tree, value: str) -> tuple[Path | None, str]:
    """The full mammogram named by the CSV's `image file path`, or (None, reason)."""
    name = _case_folder(value)
    files = tree.dicoms(name)
    if files is None:
        return None, tree.missing(name)
    if not files:
        return None, f"{tree.folder(name)}: no .dcm files below the case folder"
    for root in tree.roots:  # the old release: the CSV path is the file itself
        exact = root / value.strip()
        if exact in files:
            return exact, ""
    if len(files) == 1:
        return files[0], ""
    # Several files: the full mammogram is the largest one.
    def area(path: Path) -> int:
        try:
            ds = read_dicom(path, stop_before_pixels=True)
            return int(ds.Rows) * int(ds.Columns)
        except (DicomReadError, AttributeError, TypeError, ValueError):  # unreadable: never the full image
            return -1

    return max(files, key=lambda p: (area(p), str(p))), ""


def iter_cbis_records(
    src: str | os.PathLike,
    csv: Sequence[str | os.PathLike] = (),
    keep_official_split: bool = False,
) -> Iterator[Record]:
    """One record per full mammogram of the mass description CSV(s), all its ROIs merged."""
    src = Path(os.path.abspath(src))
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder")
    tree = _Tree(src)
    images: dict[str, dict] = {}  # case folder of the full image -> what we know about it
    for csv_path in find_cbis_csvs(src, csv):
        rows = read_csv(csv_path)
        if not rows:
            continue
        columns = {_key(c): c for c in rows[0]}
        for needed in ("image file path", "roi mask file path"):
            if needed not in columns:
                raise ValueError(f"{csv_path}: missing column {needed!r}")
        csv_split = "holdout" if "test" in csv_path.name.lower() else "train"
        for row in rows:
            get = lambda k: (row.get(columns.get(k, ""), "") or "").strip()  # noqa: E731
            kind = get("abnormality type").lower()
            if kind and kind != "mass":
                continue  # calcification rows (if a calc CSV is given) are not masses
            image_value = get("image file path")
            folder = _case_folder(image_value)
            if not folder:
                continue
            entry = images.setdefault(
                folder,
                {
                    "image_value": image_value,
                    "patient": get("patient id") or _patient_from(folder),
                    "laterality": normalise_laterality(get("left or right breast")),
                    "view": normalise_view(get("image view")),
                    "split": _split_from(folder, csv_split),
                    "rois": [],
                },
            )
            roi_folders = []
            for column in ("roi mask file path", "cropped image file path"):
                name = _case_folder(get(column))
                if name and name not in roi_folders:
                    roi_folders.append(name)
            if roi_folders and roi_folders not in entry["rois"]:
                entry["rois"].append(roi_folders)

    for folder in sorted(images):
        entry = images[folder]
        image, problem = _pick_full_image(tree, entry["image_value"])
        groups, labels = [], []
        for roi_folders in entry["rois"]:
            candidates: list[Path] = []
            for name in roi_folders:
                files = tree.dicoms(name)
                if files is None:
                    problem = problem or f"ROI: {tree.missing(name)}"
                    continue
                candidates += [f for f in files if f != image]
            groups.append(tuple(candidates))
            labels.append(" / ".join(str(tree.folder(n) or n) for n in roi_folders))
        yield Record(
            id=safe_id(folder),
            image=image if image is not None else tree.roots[-1] / folder,
            patient_id=entry["patient"],
            mask=RoiDicomMask(tuple(groups), tuple(labels)),
            view=entry["view"],
            laterality=entry["laterality"],
            source="cbis-ddsm",
            split=entry["split"] if keep_official_split else "",
            problem=problem,
        )


def _patient_from(folder: str) -> str:
    match = _PATIENT.search(folder)
    return match.group(0) if match else ""


def _split_from(folder: str, csv_split: str) -> str:
    lower = folder.lower()
    if "-training" in lower or "-train_" in lower:
        return "train"
    if "-test" in lower:
        return "holdout"
    return csv_split
