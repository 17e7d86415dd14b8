"""The bookkeeping prepare and predict keep in their output folders, per shard.

Each run (or shard I of N) has a settings file `<stem><suffix>.json` — the settings that decide
its outputs and whether it finished — and an append-only journal `<stem>-done<suffix>.jsonl`
with one JSON line per finished or failed input, flushed at once, so a killed run loses at most
the line being written (readers skip a torn line). `suffix` is `mammoseg.shards.Part.suffix`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammoseg.io import open_no_follow, write_text_atomic
from mammoseg.shards import Part


def settings_path(out: Path, stem: str, part: Part) -> Path:
    return out / f"{stem}{part.suffix}.json"


def journal_path(out: Path, stem: str, part: Part) -> Path:
    return out / f"{stem}-done{part.suffix}.jsonl"


def journal_entries(stem: str) -> tuple[str, ...]:
    """The names (and glob patterns) of every settings file and journal of `stem`, shards included."""
    return (f"{stem}.json", f"{stem}-done.jsonl", f"{stem}.part-*.json", f"{stem}-done.part-*.jsonl")


def read_state(path: Path) -> dict[str, Any] | None:
    """A settings file's content ({"settings": ..., "finished": ...}), None if absent or unreadable."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(out: Path, stem: str, part: Part, settings: Mapping[str, Any], finished: bool) -> None:
    state = {"settings": dict(settings), "parts": part.count, "part": part.index, "finished": finished}
    write_text_atomic(settings_path(out, stem, part), json.dumps(state, indent=2) + "\n", durable=True)


def journal_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a journal, in order; lines torn by a killed run are skipped."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


@dataclass
class Entries:
    """What the journals say, by key: finished entries and failed ones (the latest line of a key wins)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)


def latest_entries(out: Path, stem: str, key: Callable[[dict[str, Any]], str | None],
                   part: Part | None = None) -> Entries:
    """What the journals of `part` (default: every journal in `out`, a one-machine run's and each
    shard's) say, by `key`. The latest line of a key wins; a failed entry is one with an "error";
    lines whose key is None are ignored."""
    paths = [journal_path(out, stem, part)] if part is not None else sorted(out.glob(f"{stem}-done*.jsonl"))
    finished: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for path in paths:
        for entry in journal_lines(path):
            name = key(entry)
            if name is None:
                continue
            target, other = (failed, finished) if "error" in entry else (finished, failed)
            target[name] = entry
            other.pop(name, None)
    return Entries(finished, failed)


class Journal:
    """Appends one JSON line per call to `add`, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file() and not path.is_symlink() and path.stat().st_size:
            # A killed run may have torn the last line: start a new one.
            with os.fdopen(open_no_follow(path, os.O_RDWR), "rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        # Never through a link: a folder copied with `cp -rs` must not append to the original's journal.
        fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.file = os.fdopen(fd, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def add(self, entry: Mapping[str, Any]) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def finished_shards(out: Path, stem: str, command: str) -> tuple[dict[str, Any], int]:
    """The common settings and part count of a sharded run whose every part finished; otherwise a
    clear error naming the missing or unfinished parts."""
    pattern = re.compile(re.escape(stem) + r"\.part-(\d+)-of-(\d+)\.json")
    states = {}
    for path in out.glob(f"{stem}.part-*-of-*.json"):
        match = pattern.fullmatch(path.name)
        state = read_state(path)
        if match and state is not None:
            states[int(match.group(1))] = (int(match.group(2)), state)
    if not states:
        raise FileNotFoundError(f"{out}: no shard of a `mammoseg {command} --parts N --part I` run found to merge")
    counts = {count for count, _ in states.values()}
    if len(counts) != 1:
        raise ValueError(f"{out}: shards of different --parts ({sorted(counts)}) are mixed here; run them again alike")
    count = counts.pop()
    if len({json.dumps(state["settings"], sort_keys=True) for _, state in states.values()}) != 1:
        raise ValueError(f"{out}: the shards ran with different settings; run them again alike")
    missing = [i for i in range(count) if i not in states]
    unfinished = [i for i, (_, state) in sorted(states.items()) if not state.get("finished")]
    if missing or unfinished:
        parts = ", ".join([f"part {i} missing" for i in missing] + [f"part {i} unfinished" for i in unfinished])
        raise ValueError(f"{out}: cannot merge yet: {parts} (of --parts {count}); run those parts, then merge again")
    return next(iter(states.values()))[1]["settings"], count
