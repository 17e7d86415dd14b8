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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mammoseg import journals
from mammoseg.inference.inputs import InputError, InputItem, is_prepared_folder
from mammoseg.io import read_csv, write_csv_atomic, write_text_atomic
from mammoseg.layouts import PredictionLayout
from mammoseg.shards import Part

STEM = ".predict"
PREDICTIONS_COLUMNS = ("id", "input", "mask", "height", "width", "grid")
ERRORS_COLUMNS = ("input", "reason")


def settings_path(out: Path, part: Part) -> Path:
    return journals.settings_path(out, STEM, part)


def journal_path(out: Path, part: Part) -> Path:
    return journals.journal_path(out, STEM, part)


def signature(path: str | os.PathLike) -> list[int]:
    """[size, mtime_ns] of an input file: a resumed run redoes an input that changed."""
    try:
        stat = os.stat(path)
    except OSError:
        return [-1, -1]
    return [stat.st_size, stat.st_mtime_ns]


def read_state(out: Path, part: Part) -> dict[str, Any] | None:
    return journals.read_state(settings_path(out, part))


def write_state(out: Path, part: Part, settings: Mapping[str, Any], finished: bool) -> None:
    journals.write_state(out, STEM, part, settings, finished)


def finished_shards(out: Path) -> tuple[dict[str, Any], int]:
    return journals.finished_shards(out, STEM, "predict")


class Done(journals.Entries):
    """What the journals hold, by input key: predicted rows and failures (the latest line wins)."""

    def finished(self, item: InputItem, out: Path) -> bool:
        """Whether `item` was predicted from this very file and its mask is on disk."""
        entry = self.rows.get(item.key)
        return (entry is not None and entry["sources"] == signature(item.input)
                and (out / entry["row"]["mask"]).is_file())


def read_done(out: Path, part: Part | None = None) -> Done:
    """The journal of `part`, or every journal in `out` (a one-machine run's and each shard's)."""
    entries = journals.latest_entries(out, STEM, lambda entry: entry.get("key"), part)
    return Done(entries.rows, entries.errors)


class PredictionJournal(journals.Journal):
    """One line per predicted input or failure."""

    def __init__(self, out: Path, part: Part) -> None:
        super().__init__(journal_path(out, part))

    def add_row(self, item: InputItem, row: Mapping[str, Any]) -> None:
        self.add({"key": item.key, "seq": item.seq, "row": dict(row), "sources": signature(item.input)})

    def add_error(self, error: InputError) -> None:
        self.add({"key": error.key or f"error:{error.seq}:{error.input}", "seq": error.seq,
                  "error": {"input": error.input, "reason": error.reason}})


def prepared_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """The prepared folders among predict's inputs (recorded as `data_dirs`: view and report read
    the images and reference masks from there and never guess a folder from file paths)."""
    return [str(i) for i in inputs if Path(i).is_dir() and is_prepared_folder(Path(i))]


def write_results(out: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
    """errors.csv, predict.json, then predictions.csv (last: it marks the folder finished), from
    the journals in input order; returns the summary with the final counts."""
    done, layout = read_done(out), PredictionLayout(out)
    rows = [e["row"] for e in sorted(done.rows.values(), key=lambda e: e["seq"])]
    errors = [e["error"] for e in sorted(done.errors.values(), key=lambda e: e["seq"])]
    summary = {**summary, "data_dirs": prepared_inputs(summary.get("inputs") or ()), "n_predicted": len(rows),
               "n_errors": len(errors), "out_dir": str(out)}
    write_csv_atomic(layout.errors, errors, ERRORS_COLUMNS, durable=True)
    write_text_atomic(layout.summary, json.dumps(summary, indent=2) + "\n")
    write_csv_atomic(layout.predictions, rows, PREDICTIONS_COLUMNS, durable=True)
    return summary


def prediction_complete(out_dir: str | os.PathLike) -> bool:
    """True when a prediction folder was finished (predictions.csv exists and its masks do)."""
    out, layout = Path(out_dir), PredictionLayout(out_dir)
    if not layout.predictions.is_file() or not layout.summary.is_file():
        return False
    return all((out / r["mask"]).is_file() for r in read_csv(layout.predictions))
