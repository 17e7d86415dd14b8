"""The prepared folder's manifest.csv: its columns and a checked reader.

Every stage after `prepare` reads the prepared folder through `load_manifest`, so a
missing column or a patient on both sides of the split is caught in one place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from mammoseg.geometry import CROP_FIELDS
from mammoseg.io import read_csv
from mammoseg.layouts import PreparedLayout

#: Column order of manifest.csv (docs/method.md plus what mapping back to the original grid needs).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "id",
    "patient_id",
    "image",
    "mask",
    "split",
    "orig_height",
    "orig_width",
    "laterality",
    "view",
    "source",
    "has_mass",
    "chest_side",
    "pad_top",
    "pad_bottom",
    "pad_left",
    "pad_right",
    "size",
    "src_image",
    "pixel_spacing",
    "sop_instance_uid",
    "presentation_intent",
)
#: Columns added after the first release: read as empty when an older manifest lacks them.
LATER_COLUMNS: tuple[str, ...] = ("presentation_intent",)
#: Pixels cut from each side of the original before padding (`geometry.PadResize`): written after
#: MANIFEST_COLUMNS only by a folder prepared with the breast crop; without them, no crop.
CROP_COLUMNS: tuple[str, ...] = CROP_FIELDS


def is_cropped(rows: Sequence[Mapping[str, str]]) -> bool:
    """Whether a manifest's images were cut to the breast before padding (it has the crop columns)."""
    return bool(rows) and all(c in rows[0] for c in CROP_COLUMNS)


SPLITS = ("train", "holdout")

#: Characters allowed in an image id (it becomes a file name in every output folder).
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(text: str) -> str:
    """A file-name-safe id: runs of other characters become one `_` (the one id rule of every stage)."""
    cleaned = _UNSAFE_ID.sub("_", text.strip()).strip("._")
    return cleaned or "image"


class UniqueIds:
    """Hands out safe ids, each once: a repeated one gets `_2`, `_3`, ... Compared
    case-insensitively, because ids become file names and some file systems fold case."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def take(self, name: str) -> str:
        base = safe_id(name)
        candidate, n = base, 1
        while candidate.lower() in self._taken:
            n += 1
            candidate = f"{base}_{n}"
        self._taken.add(candidate.lower())
        return candidate


def load_manifest(data_dir: str | os.PathLike, split: str | None = None) -> list[dict[str, str]]:
    """Rows of `<data_dir>/manifest.csv`, optionally only one split; checks columns and patients."""
    path = PreparedLayout(data_dir).manifest
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {path.name}; is {data_dir} a folder made by `mammoseg prepare`?")
    rows = read_csv(path)
    header = set(rows[0]) if rows else set()
    missing = [c for c in MANIFEST_COLUMNS if c not in header and c not in LATER_COLUMNS] if rows else []
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for row in rows:
        for column in LATER_COLUMNS:
            row.setdefault(column, "")
    check_ids(rows, str(path))
    check_patients_disjoint(rows, "split", where=str(path))
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        rows = [r for r in rows if r["split"] == split]
    return rows


def check_ids(rows: list[dict[str, str]], where: str) -> None:
    """Every id file-name-safe (`safe_id`) and used once (case-insensitively): ids name the files
    of every stage, so prepare, predict and evaluate must agree on them exactly."""
    seen: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        image_id = row["id"]
        if safe_id(image_id) != image_id:
            raise ValueError(f"{where}: line {line}: id {image_id!r} is not file-name safe "
                             f"(letters, digits, '.', '_', '-'); e.g. {safe_id(image_id)!r}")
        if image_id.lower() in seen:
            raise ValueError(f"{where}: line {line}: id {image_id!r} is used twice (also as {seen[image_id.lower()]!r})")
        seen[image_id.lower()] = image_id


def check_patients_disjoint(rows: list[dict[str, str]], group_key: str, where: str = "") -> None:
    """Raise if any patient_id occurs under two different values of `group_key` (split or fold)."""
    seen: dict[str, str] = {}
    for row in rows:
        pid, group = row["patient_id"], str(row[group_key])
        if seen.setdefault(pid, group) != group:
            raise ValueError(
                f"{where}: patient {pid!r} appears in both {group_key} {seen[pid]!r} and {group!r}"
            )
