"""What a prepare run keeps in its output folder, per shard: its settings and its journal.

    .prepare{suffix}.json        the settings that decide the images, and whether the run finished
    .prepare-done{suffix}.jsonl  one line per finished image (its manifest row, a preassigned
                                 split, the size/mtime of its source files) or failed input

`suffix` is '' for a one-machine run and '.part-I-of-N' for shard I of N (`mammoseg.shards`),
so shards never write the same file. A rerun resumes from the journals, redoing what failed
or whose sources changed; `--merge` reads every shard's files to build the manifest once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mammoseg.io import write_text_atomic
from mammoseg.shards import Part

SETTINGS_FILE = ".prepare.json"
JOURNAL_FILE = ".prepare-done.jsonl"
_PART_SETTINGS = re.compile(r"\.prepare\.part-(\d+)-of-(\d+)\.json")


def settings_path(out: Path, part: Part) -> Path:
    return out / f".prepare{part.suffix}.json"


def journal_path(out: Path, part: Part) -> Path:
    return out / f".prepare-done{part.suffix}.jsonl"


def read_state(path: Path) -> dict[str, Any] | None:
    """A settings file's content ({"settings": ..., "finished": ...}), None if absent or unreadable."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(out: Path, part: Part, settings: Mapping[str, Any], finished: bool) -> None:
    state = {"settings": dict(settings), "parts": part.count, "part": part.index, "finished": finished}
    write_text_atomic(settings_path(out, part), json.dumps(state, indent=2) + "\n", durable=True)


@dataclass
class JournalEntries:
    """What the journals say: finished images by id, and failed inputs by id (the latest line wins)."""

    rows: dict[str, dict[str, Any]]
    errors: dict[str, dict[str, str]]


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line torn by a killed run
        if isinstance(entry, dict):
            yield entry


def read_journals(out: Path) -> JournalEntries:
    """Every journal in `out` (a one-machine run's and each shard's); images whose PNGs are gone
    are not taken as finished."""
    found = JournalEntries({}, {})
    for path in sorted(out.glob(".prepare-done*.jsonl")):
        for entry in _lines(path):
            if isinstance(entry.get("error"), dict):
                found.errors[entry["error"]["id"]] = entry["error"]
                found.rows.pop(entry["error"]["id"], None)
            elif isinstance(entry.get("row"), dict):
                row = entry["row"]
                if (out / row["image"]).is_file() and (out / row["mask"]).is_file():
                    found.rows[row["id"]] = entry
                    found.errors.pop(row["id"], None)
    return found


class Journal:
    """Appends one line per finished image or failed input, flushed at once (a kill loses at most
    the line being written, which the reader skips)."""

    def __init__(self, out: Path, part: Part) -> None:
        self.path = journal_path(out, part)
        self._end_torn_line()
        self.file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def _end_torn_line(self) -> None:
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")

    def add(self, entry: Mapping[str, Any]) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_states(out: Path) -> dict[int, tuple[int, dict[str, Any]]]:
    """index → (count, state) of every shard settings file in `out`."""
    states = {}
    for path in out.glob(".prepare.part-*-of-*.json"):
        match = _PART_SETTINGS.fullmatch(path.name)
        state = read_state(path)
        if match and state is not None:
            states[int(match.group(1))] = (int(match.group(2)), state)
    return states


def finished_shards(out: Path) -> tuple[dict[str, Any], int]:
    """The common settings and part count of a sharded prepare whose every part finished;
    otherwise a clear error naming the missing or unfinished parts."""
    states = shard_states(out)
    if not states:
        raise FileNotFoundError(f"{out}: no shard of a `mammoseg prepare --parts N --part I` run found to merge")
    counts = {count for count, _ in states.values()}
    if len(counts) != 1:
        raise ValueError(f"{out}: shards of different --parts ({sorted(counts)}) are mixed here; prepare again")
    count = counts.pop()
    settings = {json.dumps(state["settings"], sort_keys=True) for _, state in states.values()}
    if len(settings) != 1:
        raise ValueError(f"{out}: the shards were prepared with different settings; prepare them again alike")
    missing = [i for i in range(count) if i not in states]
    unfinished = [i for i, (_, state) in sorted(states.items()) if not state.get("finished")]
    if missing or unfinished:
        parts = ", ".join([f"part {i} missing" for i in missing] + [f"part {i} unfinished" for i in unfinished])
        raise ValueError(f"{out}: cannot merge yet: {parts} (of --parts {count}); run those parts, then merge again")
    return next(iter(states.values()))[1]["settings"], count
