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
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mammoseg.dicom import read_mammogram
from mammoseg.geometry import apply_to_mask, standardise
from mammoseg.io import (
    as_uint16,
    read_png,
    remove_entries,
    write_csv_atomic,
    write_png,
    write_text_atomic,
)
from mammoseg.manifest import MANIFEST_COLUMNS, SPLITS, check_patients_disjoint
from mammoseg.sources import Record, iter_records
from mammoseg.sources.records import normalise_laterality, normalise_view

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
    n_errors: int = 0
    strict: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 on success; 1 when nothing was prepared, or (strict) when any input failed."""
        if self.n_images == 0 or (self.strict and self.n_errors):
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
        errors = f"  errors: {self.n_errors}"
        if self.n_errors:
            errors += f" (see {self.out / 'errors.csv'})"
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
    mask_out = apply_to_mask(mask.astype(np.uint8) * 255, standard.plan)
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
    }
    row.update(standard.plan.to_row())
    return row


def _run_one(record: Record, out: Path, size: int) -> tuple[Record, dict[str, Any] | None, str]:
    """`prepare_one` that never raises: (record, row or None, reason)."""
    try:
        return record, prepare_one(record, out, size), ""
    except Exception as exc:  # a broken input must not stop the batch
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError)):
            reason = f"{type(exc).__name__}: {reason}"
        return record, None, reason


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism; avoid oversubscribing cores


def _results(records: Sequence[Record], out: Path, size: int, workers: int) -> Iterator[tuple]:
    if workers <= 1 or len(records) <= 1:
        for record in records:
            yield _run_one(record, out, size)
        return
    # "spawn": workers start clean, whatever threads (torch, OpenMP) the parent has running.
    # (As with any spawned pool, a script calling this needs an `if __name__ == "__main__":` guard.)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)
    try:
        futures = {pool.submit(_run_one, record, out, size): record for record in records}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # the worker process itself died (killed, out of memory, crash)
                yield futures[future], None, f"{futures[future].image}: worker process failed ({type(exc).__name__}: {exc})"
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def _open_output(out: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Make `out` ready; True when it resumes an earlier run with the same settings."""
    settings_path = out / SETTINGS_FILE
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        previous = None
        if settings_path.is_file():
            try:
                previous = json.loads(settings_path.read_text(encoding="utf-8")).get("settings")
            except (ValueError, AttributeError):
                previous = None
        if overwrite:
            remove_entries(out, OUTPUTS)
        elif previous == settings:
            return True
        elif previous is not None:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise FileExistsError(
                f"{out}: holds a prepared folder made with different settings ({', '.join(changed)}); "
                "pass --overwrite to replace it or choose another --out"
            )
        else:
            raise FileExistsError(
                f"{out}: folder is not empty and was not made by this prepare; "
                "pass --overwrite to replace it or choose another --out"
            )
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings_path, json.dumps({"settings": settings}, indent=2) + "\n")
    (out / JOURNAL_FILE).unlink(missing_ok=True)
    return False


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


def _sort_out(records: Sequence[Record], done: Mapping[str, dict[str, Any]]) -> tuple[dict, list, list[Record]]:
    """(entries resumed from the journal, errors found while listing, records still to prepare)."""
    entries: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, str]] = []
    todo: list[Record] = []
    for record in records:
        if record.id in done:
            entries[record.id] = done[record.id]
        elif record.problem:
            errors.append({"source_path": str(record.image), "id": record.id, "reason": record.problem})
        else:
            todo.append(record)
    return entries, errors, todo


def _prepare_records(todo: Sequence[Record], out: Path, size: int, workers: int, progress: bool,
                     entries: dict[str, dict[str, Any]], errors: list[dict[str, str]]) -> None:
    """Prepare `todo` (in `workers` processes), journalling each finished image as it lands."""
    _end_journal_line(out / JOURNAL_FILE)
    with open(out / JOURNAL_FILE, "a", encoding="utf-8") as journal, tqdm(
        total=len(todo), desc="prepare", unit="img", disable=not progress or not todo
    ) as bar:
        for record, row, reason in _results(todo, out, size, workers):
            if row is None:
                errors.append({"source_path": str(record.image), "id": record.id, "reason": reason})
                log.warning("%s", reason)
            else:
                entry = {"row": row, "split": record.split}
                journal.write(json.dumps(entry) + "\n")
                journal.flush()
                entries[record.id] = entry
            bar.update(1)


def _summary(out: Path, rows: Sequence[Mapping[str, Any]], n_resumed: int, n_errors: int, strict: bool,
             notes: list[str]) -> PrepareSummary:
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
        n_resumed=n_resumed,
        n_errors=n_errors,
        strict=strict,
        notes=notes,
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
    was prepared, or with `strict` when any input failed.
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
    resumed = _open_output(out, settings, overwrite)
    done = _read_journal(out) if resumed else {}

    entries, errors, todo = _sort_out(records, done)
    n_resumed = len(entries)
    _prepare_records(todo, out, size, workers, progress, entries, errors)
    # Records keep the source's order, so the folder does not depend on `workers`.
    order = {record.id: i for i, record in enumerate(records)}
    rows = [dict(entries[i]["row"]) for i in sorted(entries, key=order.__getitem__)]
    errors.sort(key=lambda e: order.get(e["id"], len(order)))
    preassigned = {i: e.get("split", "") for i, e in entries.items() if e.get("split") in SPLITS}
    notes = assign_splits(rows, preassigned, holdout, seed) if rows else []
    check_patients_disjoint(rows, "split", where=str(out / "manifest.csv"))
    write_csv_atomic(out / "manifest.csv", [{c: row.get(c, "") for c in MANIFEST_COLUMNS} for row in rows], MANIFEST_COLUMNS)
    write_csv_atomic(out / "errors.csv", errors, ERROR_COLUMNS)
    return _summary(out, rows, n_resumed, len(errors), strict, notes)
