"""What a prepare run keeps in its output folder, per shard (`mammoseg.journals`):

    .prepare{suffix}.json        the settings that decide the images, and whether the run finished
    .prepare-done{suffix}.jsonl  one line per finished image (its manifest row, a preassigned
                                 split, the size/mtime of its source files) or failed input

`suffix` is '' for a one-machine run and '.part-I-of-N' for shard I of N (`mammoseg.shards`),
so shards never write the same file. A rerun resumes from the journals, redoing what failed
or whose sources changed; `--merge` reads every shard's files to build the manifest once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mammoseg import journals
from mammoseg.shards import Part

STEM = ".prepare"


def settings_path(out: Path, part: Part) -> Path:
    return journals.settings_path(out, STEM, part)


def journal_path(out: Path, part: Part) -> Path:
    return journals.journal_path(out, STEM, part)


def read_state(path: Path) -> dict[str, Any] | None:
    return journals.read_state(path)


def write_state(out: Path, part: Part, settings: Mapping[str, Any], finished: bool) -> None:
    journals.write_state(out, STEM, part, settings, finished)


def open_journal(out: Path, part: Part) -> journals.Journal:
    return journals.Journal(journal_path(out, part))


def finished_shards(out: Path) -> tuple[dict[str, Any], int]:
    return journals.finished_shards(out, STEM, "prepare")


def read_journals(out: Path) -> journals.Entries:
    """Every journal in `out` (a one-machine run's and each shard's); images whose PNGs are gone
    are not taken as finished."""
    def image_id(entry: dict[str, Any]) -> str | None:
        if isinstance(entry.get("error"), dict):
            return entry["error"]["id"]
        row = entry.get("row")
        if isinstance(row, dict) and (out / row["image"]).is_file() and (out / row["mask"]).is_file():
            return row["id"]
        return None

    found = journals.latest_entries(out, STEM, image_id)
    return journals.Entries(found.rows, {image: entry["error"] for image, entry in found.errors.items()})
