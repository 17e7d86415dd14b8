"""Sources → prepared folder: windowed, padded, resized 16-bit PNGs, masks and manifest.csv.

Each image is read (DICOM windowed by `mammoseg.dicom`, or PNG), padded to a square away
from the chest wall and resized (`mammoseg.geometry`), and written with its 0/255 mask.
Work runs in `workers` processes; an input that fails goes to errors.csv and the rest
go on. The patient-grouped train/holdout split is drawn once all images are known.

Resuming: `.prepare.json` records the settings that determine the images (format,
source, size, source options) and `.prepare-done.jsonl` gets one line per finished image.
A rerun with the same settings skips images whose line and PNGs exist and rewrites the
manifest (so a changed `--holdout`/`--seed` only redraws the split); different settings
are refused unless `overwrite=True`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mammoseg.dicom import read_mammogram
from mammoseg.geometry import apply_to_mask, standardise
from mammoseg.folders import OutputFolder, open_output_folder
from mammoseg.io import as_uint16, read_png, write_csv_atomic, write_png, write_text_atomic
from mammoseg.manifest import MANIFEST_COLUMNS, SPLITS, check_patients_disjoint
from mammoseg.sources import Record, iter_records
from mammoseg.sources.records import normalise_laterality, normalise_view
from mammoseg.workers import run_tasks

log = logging.getLogger(__name__)

ERROR_COLUMNS = ("source_path", "id", "reason")
SETTINGS_FILE = ".prepare.json"
JOURNAL_FILE = ".prepare-done.jsonl"
#: What `prepare` writes into the output folder (and what --overwrite removes).
OUTPUTS = ("images", "masks", "manifest.csv", "errors.csv", SETTINGS_FILE, JOURNAL_FILE)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RASTER_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


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
            f"{_n(self.n_patients, 'patient')} into {self.out}",
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


def read_image(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The image as uint16 (DICOM windowed; 8-bit rasters ×257) and what its file says about it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == _PNG_SIGNATURE or path.suffix.lower() in _RASTER_SUFFIXES:
        return as_uint16(read_png(path), path), {}
    mammogram = read_mammogram(path)
    meta = {
        "patient_id": mammogram.patient_id,
        "laterality": mammogram.laterality,
        "view": mammogram.view,
        "pixel_spacing": mammogram.pixel_spacing,
        "sop_instance_uid": mammogram.sop_instance_uid,
        "presentation_intent": mammogram.presentation_intent,
    }
    return mammogram.pixels, meta


def _format_spacing(spacing: Sequence[float] | None) -> str:
    if not spacing:
        return ""
    return f"{float(spacing[0]):g}\\{float(spacing[1]):g}"


def prepare_one(record: Record, out: Path, size: int) -> dict[str, Any]:
    """Read, pad, resize and write one record; the manifest row (without `split`)."""
    if record.problem:
        raise ValueError(record.problem)
    pixels, meta = read_image(record.image)
    height, width = pixels.shape
    patient_id = record.patient_id or str(meta.get("patient_id") or "").strip()
    if not patient_id:
        raise ValueError(f"{record.image}: no patient ID (the source gives none and the file has no PatientID)")
    mask = record.load_mask(height, width)
    standard = standardise(pixels, size)
    mask_out = apply_to_mask(mask, standard.plan)  # bool; non-zero is mass
    write_png(out / "masks" / f"{record.id}.png", mask_out)
    write_png(out / "images" / f"{record.id}.png", standard.image)
    row: dict[str, Any] = {
        "id": record.id,
        "patient_id": patient_id,
        "image": f"images/{record.id}.png",
        "mask": f"masks/{record.id}.png",
        "split": "",
        "laterality": record.laterality or normalise_laterality(str(meta.get("laterality") or "")),
        "view": record.view or normalise_view(str(meta.get("view") or "")),
        "source": record.source,
        "has_mass": int(bool(mask_out.any())),
        "chest_side": standard.chest_side,
        "src_image": str(record.image),
        "pixel_spacing": _format_spacing(meta.get("pixel_spacing")),
        "sop_instance_uid": str(meta.get("sop_instance_uid") or ""),
        "presentation_intent": str(meta.get("presentation_intent") or ""),
    }
    row.update(standard.plan.to_row())
    return row


def _run_one(task: tuple[Record, Path, int]) -> tuple[dict[str, Any] | None, str]:
    """`prepare_one` that never raises: (row or None, reason)."""
    record, out, size = task
    try:
        return prepare_one(record, out, size), ""
    except Exception as exc:  # a broken input must not stop the batch
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError)):
            reason = f"{type(exc).__name__}: {reason}"
        return None, reason


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism; avoid oversubscribing cores


def _results(records: Sequence[Record], out: Path, size: int, workers: int) -> Iterator[tuple[Record, dict | None, str, bool]]:
    """(record, row or None, reason, whether its worker process died) for every record, as they finish."""
    tasks = [(record, out, size) for record in records]
    if workers <= 1 or len(records) <= 1:
        for task in tasks:
            yield task[0], *_run_one(task), False
        return
    # (As with any spawned worker, a script calling this needs an `if __name__ == "__main__":` guard.)
    for result in run_tasks(_run_one, tasks, workers, initializer=_init_worker):
        record = records[result.index]
        if result.worker_died:
            yield record, None, f"{record.image}: {result.worker_died} while preparing it", True
        else:
            yield record, *result.value, False


def source_signature(record: Record) -> list[list[Any]]:
    """[path, size, mtime_ns] of every file an image is made from (image and mask files), so a
    resumed prepare notices an edited, replaced or moved source."""
    signature = []
    for path in record.source_files():
        try:
            stat = path.stat()
            signature.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            signature.append([str(path), -1, -1])
    return signature


# --------------------------------------------------------------------------- split


def split_holdout(rows: Sequence[Mapping[str, Any]], holdout: float, seed: int) -> dict[str, str]:
    """patient_id → `train`/`holdout`: about `holdout` of the images, whole patients, stratified.

    Patients are stratified by whether any of their images shows a mass; each stratum gets
    its share of the holdout images (largest remainder), filled greedily with patients in
    a seeded random order, taking a patient only when that brings the count closer to the
    target. With holdout > 0 and at least two patients, both sides get a patient.
    """
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    n_images: Counter[str] = Counter()
    with_mass: set[str] = set()
    for row in rows:
        n_images[row["patient_id"]] += 1
        if int(row["has_mass"]):
            with_mass.add(row["patient_id"])
    patients = sorted(n_images)
    strata = [[p for p in patients if p in with_mass], [p for p in patients if p not in with_mass]]
    sizes = [sum(n_images[p] for p in s) for s in strata]
    total = round(holdout * sum(sizes))
    quotas = [holdout * n for n in sizes]
    targets = [int(np.floor(q)) for q in quotas]
    by_remainder = sorted(range(len(strata)), key=lambda i: (-(quotas[i] - targets[i]), i))
    for i in by_remainder[: max(0, total - sum(targets))]:
        targets[i] += 1

    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    order: list[str] = []
    for stratum, target in zip(strata, targets):
        count = 0
        for index in rng.permutation(len(stratum)):
            patient = stratum[index]
            order.append(patient)
            if abs(count + n_images[patient] - target) < abs(count - target):
                chosen.append(patient)
                count += n_images[patient]
    if holdout > 0 and len(patients) >= 2:
        if not chosen:  # every patient too big for the target: take the smallest one
            chosen.append(min(order, key=lambda p: n_images[p]))
        elif len(chosen) == len(patients):
            chosen.pop()
    held = set(chosen)
    return {p: ("holdout" if p in held else "train") for p in patients}


def assign_splits(rows: list[dict[str, Any]], preassigned: Mapping[str, str], holdout: float, seed: int) -> list[str]:
    """Set each row's `split`; preassigned ids (official splits) win. Returns notes."""
    notes: list[str] = []
    fixed: dict[str, set[str]] = {}
    for row in rows:
        split = preassigned.get(row["id"], "")
        if split:
            fixed.setdefault(row["patient_id"], set()).add(split)
    patient_split: dict[str, str] = {}
    for patient, splits in sorted(fixed.items()):
        if len(splits) > 1:
            notes.append(f"patient {patient} is in both official splits; all of its images go to holdout")
        patient_split[patient] = "holdout" if "holdout" in splits else "train"
    free = [row for row in rows if row["patient_id"] not in patient_split]
    patient_split.update(split_holdout(free, holdout, seed))
    for row in rows:
        row["split"] = patient_split[row["patient_id"]]
    return notes


# --------------------------------------------------------------------------- folder state


def _settings(fmt: str, src: Path, size: int, options: Mapping[str, Any]) -> dict[str, Any]:
    def norm(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, os.PathLike):
            return os.path.abspath(value)
        return value

    opts = {k: norm(v) for k, v in sorted(options.items())}
    if "csv" in opts:
        opts["csv"] = [os.path.abspath(p) for p in opts["csv"]]
    return {"format": fmt, "src": os.path.abspath(src), "size": int(size), "options": opts}


def _input_folders(src: Path, records: Sequence[Record], options: Mapping[str, Any]) -> set[Path]:
    """The source folder and every folder an input file lies in: the output may not overlap them."""
    folders = {src if src.is_dir() else src.parent}
    folders.update(Path(p).parent for p in options.get("csv") or ())
    for record in records:
        folders.update(path.parent for path in record.source_files())
    return folders


def _open_output(out: Path, settings: dict[str, Any], inputs: set[Path], overwrite: bool) -> OutputFolder:
    """Open `out` for prepare; `.continued` when it resumes an earlier run with the same settings."""
    folder = open_output_folder(out, "prepare", inputs=sorted(inputs), owned=OUTPUTS, overwrite=overwrite, resume=True)
    settings_path = out / SETTINGS_FILE
    if folder.continued:
        try:
            previous = json.loads(settings_path.read_text(encoding="utf-8")).get("settings")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous == settings:
            return folder
        folder.close()
        changed = sorted(k for k in settings if (previous or {}).get(k) != settings[k])
        raise FileExistsError(f"{out}: holds a prepared folder made with different settings ({', '.join(changed)}); "
                              "pass --overwrite to replace it or choose another --out")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings_path, json.dumps({"settings": settings}, indent=2) + "\n", durable=True)
    (out / JOURNAL_FILE).unlink(missing_ok=True)
    return folder


def _read_journal(out: Path) -> dict[str, dict[str, Any]]:
    """Finished images of an earlier run: id → {row, split}; a torn last line is ignored."""
    done: dict[str, dict[str, Any]] = {}
    path = out / JOURNAL_FILE
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            row = entry["row"]
        except (ValueError, KeyError, TypeError):
            continue
        if (out / row["image"]).is_file() and (out / row["mask"]).is_file():
            done[row["id"]] = entry
    return done


def _end_journal_line(path: Path) -> None:
    """After an interruption the journal may end in a torn line: start the next on a new line."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")


# --------------------------------------------------------------------------- the stage


def _sort_out(records: Sequence[Record], done: Mapping[str, dict[str, Any]]) -> tuple[dict, list, list[Record], int]:
    """(entries resumed from the journal, errors found while listing, records to prepare, how
    many of those were prepared before but their sources changed since)."""
    entries: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, str]] = []
    todo: list[Record] = []
    changed = 0
    for record in records:
        previous = done.get(record.id)
        if previous is not None and previous.get("sources") == source_signature(record):
            entries[record.id] = previous
        elif record.problem:
            errors.append({"source_path": str(record.image), "id": record.id, "reason": record.problem})
        else:
            changed += previous is not None
            todo.append(record)
    return entries, errors, todo, changed


def _prepare_records(todo: Sequence[Record], out: Path, size: int, workers: int, progress: bool,
                     entries: dict[str, dict[str, Any]], errors: list[dict[str, str]]) -> int:
    """Prepare `todo` (in `workers` processes), journalling each finished image as it lands;
    returns how many records failed because their worker process died."""
    died = 0
    _end_journal_line(out / JOURNAL_FILE)
    with open(out / JOURNAL_FILE, "a", encoding="utf-8") as journal, tqdm(
        total=len(todo), desc="prepare", unit="img", disable=not progress or not todo
    ) as bar:
        for record, row, reason, worker_died in _results(todo, out, size, workers):
            if row is None:
                errors.append({"source_path": str(record.image), "id": record.id, "reason": reason})
                log.warning("%s", reason)
                died += worker_died
            else:
                entry = {"row": row, "split": record.split, "sources": source_signature(record)}
                journal.write(json.dumps(entry) + "\n")
                journal.flush()
                entries[record.id] = entry
            bar.update(1)
    return died


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


def prepare_dataset(
    fmt: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 512,
    holdout: float = 0.2,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = True,
    **source_options: Any,
) -> PrepareSummary:
    """Prepare every image of the source at `src` into the folder `out` (see module docstring).

    `source_options` go to `mammoseg.sources.iter_records` (`csv`, `mass_names`,
    `keep_official_split`). Returns a summary; its `exit_code` is non-zero when nothing
    was prepared, when a worker process died, or with `strict` when any input failed.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    records = list(iter_records(fmt, src, **source_options))
    settings = _settings(fmt, src, size, source_options)
    with _open_output(out, settings, _input_folders(src, records, source_options), overwrite) as folder:
        done = _read_journal(out) if folder.continued else {}
        entries, errors, todo, n_changed = _sort_out(records, done)
        n_resumed = len(entries)
        n_died = _prepare_records(todo, out, size, workers, progress, entries, errors)
        # Records keep the source's order, so the folder does not depend on `workers`.
        order = {record.id: i for i, record in enumerate(records)}
        rows = [dict(entries[i]["row"]) for i in sorted(entries, key=order.__getitem__)]
        errors.sort(key=lambda e: order.get(e["id"], len(order)))
        preassigned = {i: e.get("split", "") for i, e in entries.items() if e.get("split") in SPLITS}
        notes = assign_splits(rows, preassigned, holdout, seed) if rows else []
        check_patients_disjoint(rows, "split", where=str(out / "manifest.csv"))
        write_csv_atomic(out / "manifest.csv", [{c: row.get(c, "") for c in MANIFEST_COLUMNS} for row in rows],
                         MANIFEST_COLUMNS, durable=True)
        write_csv_atomic(out / "errors.csv", errors, ERROR_COLUMNS, durable=True)
    return _summary(out, rows, n_resumed=n_resumed, n_changed=n_changed, n_errors=len(errors), n_worker_died=n_died,
                    strict=strict, notes=notes)
