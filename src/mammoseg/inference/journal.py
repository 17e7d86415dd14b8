"""What a predict run keeps in its prediction folder, per shard: its settings and its journal.

    .predict{suffix}.json        what decides the masks (run, checkpoints, threshold, ...) and
                                 whether the run finished
    .predict-done{suffix}.jsonl  one line per predicted input (its predictions.csv row, place in
                                 the input stream, the input file's size and mtime) or failure

`suffix` is '' for a one-machine run and '.part-I-of-N' for shard I of N. `--resume` skips the
inputs the journals say are done (the same file, its mask on disk); predictions.csv,
errors.csv and predict.json are written from the journals at the end (or by `--merge` once
every shard finished), in input order, whatever the shards did.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammoseg.inference.inputs import InputError, InputItem
from mammoseg.io import read_csv, write_csv_atomic, write_text_atomic
from mammoseg.shards import Part

PREDICTIONS_COLUMNS = ("id", "input", "mask", "height", "width", "grid")
ERRORS_COLUMNS = ("input", "reason")
SUMMARY_FILE = "predict.json"
_PART_SETTINGS = re.compile(r"\.predict\.part-(\d+)-of-(\d+)\.json")


def settings_path(out: Path, part: Part) -> Path:
    return out / f".predict{part.suffix}.json"


def journal_path(out: Path, part: Part) -> Path:
    return out / f".predict-done{part.suffix}.jsonl"


def signature(path: str | os.PathLike) -> list[int]:
    """[size, mtime_ns] of an input file: a resumed run redoes an input that changed."""
    try:
        stat = os.stat(path)
    except OSError:
        return [-1, -1]
    return [stat.st_size, stat.st_mtime_ns]


def read_state(out: Path, part: Part) -> dict[str, Any] | None:
    try:
        state = json.loads(settings_path(out, part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(out: Path, part: Part, settings: Mapping[str, Any], finished: bool) -> None:
    state = {"settings": dict(settings), "parts": part.count, "part": part.index, "finished": finished}
    write_text_atomic(settings_path(out, part), json.dumps(state, indent=2) + "\n", durable=True)


@dataclass
class Done:
    """What the journals hold, by input key: predicted rows and failures (the latest line wins)."""

    rows: dict[str, dict[str, Any]]
    errors: dict[str, dict[str, Any]]

    def finished(self, item: InputItem, out: Path) -> bool:
        """Whether `item` was predicted from this very file and its mask is on disk."""
        entry = self.rows.get(item.key)
        return (entry is not None and entry["sources"] == signature(item.input)
                and (out / entry["row"]["mask"]).is_file())


def read_done(out: Path, part: Part | None = None) -> Done:
    """The journal of `part`, or every journal in `out` (a one-machine run's and each shard's);
    torn lines are skipped."""
    done = Done({}, {})
    paths = [journal_path(out, part)] if part is not None else sorted(out.glob(".predict-done*.jsonl"))
    for path in (p for p in paths if p.is_file()):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            target, other = (done.rows, done.errors) if "row" in entry else (done.errors, done.rows)
            target[entry["key"]] = entry
            other.pop(entry["key"], None)
    return done


class PredictionJournal:
    """Appends one line per predicted input or failure, flushed at once."""

    def __init__(self, out: Path, part: Part) -> None:
        self.path = journal_path(out, part)
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb+") as fh:  # a killed run may have torn the last line
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by __exit__)

    def _add(self, entry: Mapping[str, Any]) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def add_row(self, item: InputItem, row: Mapping[str, Any]) -> None:
        self._add({"key": item.key, "seq": item.seq, "row": dict(row), "sources": signature(item.input)})

    def add_error(self, error: InputError) -> None:
        self._add({"key": error.key or f"error:{error.seq}:{error.input}", "seq": error.seq,
                   "error": {"input": error.input, "reason": error.reason}})

    def __enter__(self) -> PredictionJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def write_results(out: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
    """errors.csv, predict.json, then predictions.csv (last: it marks the folder finished), from
    the journals in input order; returns the summary with the final counts."""
    done = read_done(out)
    rows = [e["row"] for e in sorted(done.rows.values(), key=lambda e: e["seq"])]
    errors = [e["error"] for e in sorted(done.errors.values(), key=lambda e: e["seq"])]
    summary = {**summary, "n_predicted": len(rows), "n_errors": len(errors), "out_dir": str(out)}
    write_csv_atomic(out / "errors.csv", errors, ERRORS_COLUMNS, durable=True)
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    write_csv_atomic(out / "predictions.csv", rows, PREDICTIONS_COLUMNS, durable=True)
    return summary


def finished_shards(out: Path) -> tuple[dict[str, Any], int]:
    """The settings and part count of a sharded predict whose every part finished; else a
    clear error naming the missing or unfinished parts."""
    states = {}
    for path in out.glob(".predict.part-*-of-*.json"):
        match = _PART_SETTINGS.fullmatch(path.name)
        if match:
            states[int(match.group(1))] = (int(match.group(2)), read_state(out, Part(int(match.group(1)),
                                                                                        int(match.group(2)))))
    if not states:
        raise FileNotFoundError(f"{out}: no shard of a `mammoseg predict --parts N --part I` run found to merge")
    counts = {count for count, _ in states.values()}
    if len(counts) != 1:
        raise ValueError(f"{out}: shards of different --parts ({sorted(counts)}) are mixed here; predict again")
    count = counts.pop()
    if len({json.dumps((s or {}).get("settings"), sort_keys=True) for _, s in states.values()}) != 1:
        raise ValueError(f"{out}: the shards were predicted with different settings; predict them again alike")
    missing = [i for i in range(count) if i not in states]
    unfinished = [i for i, (_, s) in sorted(states.items()) if not (s or {}).get("finished")]
    if missing or unfinished:
        parts = ", ".join([f"part {i} missing" for i in missing] + [f"part {i} unfinished" for i in unfinished])
        raise ValueError(f"{out}: cannot merge yet: {parts} (of --parts {count}); run those parts, then merge again")
    return next(iter(states.values()))[1]["settings"], count


def prediction_complete(out_dir: str | os.PathLike) -> bool:
    """True when a prediction folder was finished (predictions.csv exists and its masks do)."""
    out = Path(out_dir)
    if not (out / "predictions.csv").is_file() or not (out / SUMMARY_FILE).is_file():
        return False
    return all((out / r["mask"]).is_file() for r in read_csv(out / "predictions.csv"))
