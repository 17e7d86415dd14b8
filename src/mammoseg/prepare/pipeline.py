"""Sources → prepared folder: windowed, padded, resized 16-bit PNGs, masks and manifest.csv.

Each image is read (DICOM windowed by `mammoseg.dicom.reader`, or PNG), cut to the box around the
breast (`PrepareOptions.crop`, on by default), padded to a square away from the chest wall and
resized (`mammoseg.geometry`), and written with its 0/255 mask
(`mammoseg.prepare.image`). Work runs in `workers` processes; an input that fails goes to
errors.csv and the rest go on. The patient-grouped train/holdout split (`mammoseg.prepare.splits`)
is drawn once all images are known.

Resuming (`mammoseg.prepare.journal`): the settings that determine the images and one
journal line per finished image are kept in the folder; a rerun with the same settings skips
images whose sources did not change and rewrites the manifest (so a changed `--holdout` or
`--seed` only redraws the split); different settings are refused unless `overwrite=True`.

Shards (`part=Part(I, N)`, `--parts N --part I`): each machine prepares its share of the
inputs into the same folder, writing only its own files; `merge_prepared` then writes the
manifest and errors.csv, identical to a one-machine run's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mammoseg.folders import FolderLock, LockRequest, OutputFolder, open_output_folder
from mammoseg.io import write_csv_atomic
from mammoseg.journals import Entries, Journal, journal_entries
from mammoseg.layouts import PreparedLayout
from mammoseg.manifest import CROP_COLUMNS, MANIFEST_COLUMNS, SPLITS, check_patients_disjoint
from mammoseg.prepare.image import results, source_signature
from mammoseg.prepare.journal import (
    STEM,
    finished_shards,
    journal_path,
    open_journal,
    read_journals,
    read_state,
    settings_path,
    write_state,
)
from mammoseg.prepare.splits import assign_splits
from mammoseg.shards import Part, stable_key
from mammoseg.sources import Record, iter_records

log = logging.getLogger(__name__)

ERROR_COLUMNS = ("source_path", "id", "reason")
#: What `prepare` writes into the output folder (and what --overwrite removes).
OUTPUTS = (*PreparedLayout.outputs(), *journal_entries(STEM))


@dataclass
class PrepareSummary:
    """What one `prepare_dataset` run produced; `exit_code` follows the command's rules."""

    out: Path
    n_images: int = 0
    n_with_mass: int = 0
    n_patients: int = 0
    n_train: int = 0
    n_holdout: int = 0
    n_train_patients: int = 0
    n_holdout_patients: int = 0
    n_resumed: int = 0
    n_changed: int = 0
    n_errors: int = 0
    n_worker_died: int = 0
    n_for_processing: int = 0
    strict: bool = False
    notes: list[str] = field(default_factory=list)
    #: a shard's "part I of N" ("" for a whole run): no manifest yet, `merge_prepared` writes it
    part: str = ""

    @property
    def exit_code(self) -> int:
        """0 on success; 1 when nothing was prepared, when a worker process died on a record, or
        (strict) when any input failed."""
        if self.n_images == 0 or self.n_worker_died or (self.strict and self.n_errors):
            return 1
        return 0

    def format(self) -> str:
        lines = [
            f"prepared {_n(self.n_images, 'image')} ({self.n_with_mass} with a mass) of "
            f"{_n(self.n_patients, 'patient')} into {self.out}" + (f" ({self.part})" if self.part else ""),
            f"  when every part is done: mammoseg prepare --merge --out {self.out}" if self.part else
            f"  train: {_n(self.n_train, 'image')} / {_n(self.n_train_patients, 'patient')}; "
            f"holdout: {_n(self.n_holdout, 'image')} / {_n(self.n_holdout_patients, 'patient')}",
        ]
        if self.n_resumed:
            lines.append(f"  {_n(self.n_resumed, 'image')} already prepared by an earlier run (resumed)")
        if self.n_changed:
            lines.append(f"  {_n(self.n_changed, 'image')} prepared again: the source file(s) changed since the earlier run")
        if self.n_for_processing:
            lines.append(f"  {_n(self.n_for_processing, 'image')} FOR PROCESSING (raw detector data; the paper used "
                         "FOR PRESENTATION images): flagged in manifest.csv, column presentation_intent")
        errors = f"  errors: {self.n_errors}"
        if self.n_errors:
            errors += f" (see {self.out / 'errors.csv'})"
        if self.n_worker_died:
            errors += f"; {self.n_worker_died} of them because a worker process died"
        lines.append(errors)
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --------------------------------------------------------------------------- one image


# --------------------------------------------------------------------------- folder state


def _settings(fmt: str, src: Path, size: int, options: Mapping[str, Any], crop: bool = False) -> dict[str, Any]:
    """What determines the prepared images; the crop is recorded only when on, so a folder prepared
    before it existed resumes with `crop=False` as the same settings."""
    def norm(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, os.PathLike):
            return os.path.abspath(value)
        return value

    opts = {k: norm(v) for k, v in sorted(options.items())}
    if "csv" in opts:
        opts["csv"] = [os.path.abspath(p) for p in opts["csv"]]
    settings = {"format": fmt, "src": os.path.abspath(src), "size": int(size), "options": opts}
    if crop:
        settings["crop"] = True
    return settings


def manifest_columns(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """manifest.csv's columns for a folder prepared with these settings: the crop columns too when
    the images were cropped to the breast."""
    return (*MANIFEST_COLUMNS, *CROP_COLUMNS) if settings.get("crop") else MANIFEST_COLUMNS


def _inputs(src: Path, records: Sequence[Record], options: Mapping[str, Any]) -> list[Path]:
    """What the output may not overlap: the source as given (a dataset folder: not even lie inside
    it), the CSVs, and every image and mask file."""
    inputs = {src, *(Path(p) for p in options.get("csv") or ())}
    for record in records:
        inputs.update(record.source_files())
    return sorted(inputs)


def _open_output(out: Path, settings: dict[str, Any], inputs: list[Path], overwrite: bool,
                 part: Part) -> tuple[OutputFolder, bool]:
    """Open (and lock) `out` for this part; True when it resumes the part's earlier run."""
    folder = open_output_folder(out, "prepare", inputs=inputs, owned=OUTPUTS, overwrite=overwrite, resume=True,
                                lock=LockRequest(part.lock_name))
    state = read_state(settings_path(out, part)) if folder.continued else None
    if state is not None:
        if state.get("settings") == settings:
            return folder, True
        folder.close()
        changed = sorted(k for k in settings if state.get("settings", {}).get(k) != settings[k])
        raise FileExistsError(f"{out}: holds a prepared folder made with different settings ({', '.join(changed)}); "
                              "pass --overwrite to replace it or choose another --out")
    layout = PreparedLayout(out)
    layout.images.mkdir(parents=True, exist_ok=True)
    layout.masks.mkdir(parents=True, exist_ok=True)
    write_state(out, part, settings, finished=False)
    journal_path(out, part).unlink(missing_ok=True)
    return folder, False


# --------------------------------------------------------------------------- the stage


def _error(record: Record, reason: str) -> dict[str, str]:
    return {"source_path": str(record.image), "id": record.id, "reason": reason}


def _sort_out(records: Sequence[Record], done: Entries, journal: Journal) -> tuple[dict, list[Record], int]:
    """(entries resumed from the journals, records to prepare, how many of those were prepared
    before but their sources changed since); listing problems go straight to the journal."""
    entries: dict[str, dict[str, Any]] = {}
    todo: list[Record] = []
    changed = 0
    for record in records:
        previous = done.rows.get(record.id)
        if previous is not None and previous.get("sources") == source_signature(record):
            entries[record.id] = previous
        elif record.problem:
            journal.add({"error": _error(record, record.problem)})
        else:
            changed += previous is not None
            todo.append(record)
    return entries, todo, changed


def _prepare_records(todo: Sequence[Record], out: Path, size: int, workers: int, progress: bool,
                     journal: Journal, crop: bool = False) -> int:
    """Prepare `todo` (in `workers` processes), journalling each image or failure as it lands;
    returns how many records failed because their worker process died."""
    died = 0
    with tqdm(total=len(todo), desc="prepare", unit="img", disable=not progress or not todo) as bar:
        for record, row, reason, worker_died in results(todo, out, size, workers, crop):
            if row is None:
                journal.add({"error": _error(record, reason)})
                log.warning("%s", reason)
                died += worker_died
            else:
                journal.add({"row": row, "split": record.split, "sources": source_signature(record)})
            bar.update(1)
    return died


def _write_manifest(out: Path, records: Sequence[Record], found: Entries, split: tuple[float, int],
                    columns: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """manifest.csv and errors.csv of every record, in the source's order (whatever the workers
    or shards did); the split (holdout, seed) drawn over all rows. Returns (rows, errors, notes)."""
    holdout, seed = split
    rows = [dict(found.rows[r.id]["row"]) for r in records if r.id in found.rows]
    errors = [found.errors[r.id] for r in records if r.id in found.errors and r.id not in found.rows]
    preassigned = {i: e.get("split", "") for i, e in found.rows.items() if e.get("split") in SPLITS}
    notes = assign_splits(rows, preassigned, holdout, seed) if rows else []
    layout = PreparedLayout(out)
    check_patients_disjoint(rows, "split", where=str(layout.manifest))
    write_csv_atomic(layout.manifest, [{c: row.get(c, "") for c in columns} for row in rows], columns, durable=True)
    write_csv_atomic(layout.errors, errors, ERROR_COLUMNS, durable=True)
    return rows, errors, notes


def _summary(out: Path, rows: Sequence[Mapping[str, Any]], **counts: Any) -> PrepareSummary:
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == "holdout"]
    return PrepareSummary(
        out=out,
        n_images=len(rows),
        n_with_mass=sum(int(r["has_mass"]) for r in rows),
        n_patients=len({r["patient_id"] for r in rows}),
        n_train=len(train),
        n_holdout=len(held),
        n_train_patients=len({r["patient_id"] for r in train}),
        n_holdout_patients=len({r["patient_id"] for r in held}),
        n_for_processing=sum(r.get("presentation_intent") == "FOR PROCESSING" for r in rows),
        **counts,
    )


@dataclass(frozen=True)
class PrepareOptions:
    """How a source is prepared: the output size, the holdout share and the seed of its patient-grouped
    split, the worker processes, whether any failed input fails the run, the progress bar, and
    whether each image is cut to the box around the breast before padding (`crop`; off: the
    folder earlier versions wrote, byte for byte)."""

    size: int = 512
    holdout: float = 0.2
    seed: int = 0
    workers: int = 1
    strict: bool = False
    progress: bool = True
    crop: bool = True


#: The largest prepared size: 8192² 16-bit pixels are 128 MiB per image, far beyond what a model trains on.
MAX_SIZE = 8192


def _check_arguments(src: Path, options: PrepareOptions, overwrite: bool, part: Part) -> None:
    if not 16 <= options.size <= MAX_SIZE:
        raise ValueError(f"size must be 16 to {MAX_SIZE} pixels, got {options.size}")
    if not 0 <= options.holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {options.holdout}")
    if options.workers < 1:
        raise ValueError(f"workers must be at least 1, got {options.workers}")
    if overwrite and not part.whole:
        raise ValueError("--overwrite cannot be combined with --parts: a shard must not delete the other shards' "
                         "work; prepare into a new folder instead")
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")


def _check_usable(records: Sequence[Record], src: Path, fmt: str) -> None:
    """Refuse, before anything is written, a source none of whose images can be used (none listed, or every
    one missing or unusable as listed); once one can, the others go to errors.csv as the run meets them."""
    if not records:
        raise ValueError(f"{src}: lists no images ({fmt} layout); nothing to prepare")
    reasons = []
    for record in records:
        missing = [f for f in record.source_files() if not f.is_file()]
        if not record.problem and not missing:
            return
        reasons.append(record.problem or f"{missing[0]}: no such file")
    raise ValueError(f"{src}: none of its {len(records)} image(s) can be used (e.g. {reasons[0]}); nothing to prepare")


def prepare_dataset(
    fmt: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: PrepareOptions = PrepareOptions(),
    *,
    overwrite: bool = False,
    part: Part = Part(),
    **source_options: Any,
) -> PrepareSummary:
    """Prepare every image of the source at `src` (or, for a shard, its part of them) into `out`.

    `source_options` go to `mammoseg.sources.iter_records` (`csv`, `mass_names`,
    `keep_official_split`, DICOMweb options). Returns a summary; its `exit_code` is non-zero
    when nothing was prepared, when a worker process died, or with `options.strict` when any input failed.
    """
    src, out = Path(src), Path(out)
    _check_arguments(src, options, overwrite, part)
    holdout, seed, strict = options.holdout, options.seed, options.strict
    records = list(iter_records(fmt, src, **source_options))
    _check_usable(records, src, fmt)
    mine = [r for r in records if part.owns(stable_key(r.image, src))]
    settings = _settings(fmt, src, options.size, source_options, options.crop)
    folder, resumed = _open_output(out, settings, _inputs(src, records, source_options), overwrite, part)
    with folder:
        with open_journal(out, part) as journal:
            entries, todo, n_changed = _sort_out(mine, read_journals(out) if resumed else Entries(), journal)
            n_died = _prepare_records(todo, out, options.size, options.workers, options.progress, journal,
                                      options.crop)
        found = read_journals(out)
        counts = dict(n_resumed=len(entries), n_changed=n_changed, n_worker_died=n_died, strict=strict)
        if not part.whole:
            write_state(out, part, settings, finished=True)
            rows = [found.rows[r.id]["row"] for r in mine if r.id in found.rows]
            n_errors = sum(r.id in found.errors and r.id not in found.rows for r in mine)
            return _summary(out, rows, n_errors=n_errors, part=str(part), **counts)
        rows, errors, notes = _write_manifest(out, records, found, (holdout, seed), manifest_columns(settings))
    return _summary(out, rows, n_errors=len(errors), notes=notes, **counts)


def merge_prepared(out: str | os.PathLike, holdout: float = 0.2, seed: int = 0, strict: bool = False) -> PrepareSummary:
    """Build manifest.csv and errors.csv of a sharded prepare once every part has finished: the
    same folder a one-machine run with the same settings writes. Refused, naming them, while a
    part is missing, unfinished or still running."""
    out = Path(out)
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    settings, count = finished_shards(out)
    with open_output_folder(out, "prepare", owned=OUTPUTS, resume=True):
        for index in range(count):  # a part that finished but runs again holds its lock
            FolderLock(out, Part(index, count).lock_name).release()
        options = dict(settings["options"])
        records = list(iter_records(settings["format"], Path(settings["src"]), **options))
        found = read_journals(out)
        missing = [r.id for r in records if r.id not in found.rows and r.id not in found.errors]
        if missing:
            raise ValueError(f"{out}: no shard accounts for {len(missing)} input(s) of the source, e.g. "
                             f"{', '.join(missing[:3])}; has the source changed since the parts ran?")
        rows, errors, notes = _write_manifest(out, records, found, (holdout, seed), manifest_columns(settings))
        write_state(out, Part(), settings, finished=True)
    return _summary(out, rows, n_errors=len(errors), notes=notes, strict=strict)
