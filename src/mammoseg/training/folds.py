"""Patient-grouped cross-validation folds over the `train` split, kept in RUN/folds.csv.

Folds come from scikit-learn's StratifiedGroupKFold (groups = patient_id, strata =
has_mass, shuffled with the run's seed), so every patient's images sit in one fold and
images with and without a mass are spread over the folds. When stratification is
impossible (one class only, or fewer patients of a class than folds) GroupKFold with
the same seed is used instead. The assignment is written once, before any training, and
checked (same images, same patients, same number of folds) whenever a run is continued.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from mammoseg.io import read_csv, write_csv_atomic
from mammoseg.manifest import check_patients_disjoint

log = logging.getLogger(__name__)

FOLDS_COLUMNS: tuple[str, ...] = ("id", "patient_id", "fold")


def assign_folds(rows: Sequence[Mapping[str, str]], n_folds: int, seed: int) -> dict[str, int]:
    """image id → fold (0..n_folds-1), grouped by patient, deterministic for a seed."""
    if not rows:
        raise ValueError("no training images to split into folds")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = [i for i, c in Counter(ids).items() if c > 1][:3]
        raise ValueError(f"duplicate image ids in the manifest: {', '.join(dup)}")
    groups = np.array([r["patient_id"] for r in rows])
    n_patients = len(set(groups.tolist()))
    if n_patients < n_folds:
        raise ValueError(
            f"{n_patients} patient(s) in the train split cannot fill {n_folds} patient-grouped folds"
        )
    y = np.array([int(float(r.get("has_mass") or 0)) for r in rows])
    # Stratify by patient-level class counts: each class needs at least n_folds patients.
    patient_class = {}
    for g, label in zip(groups.tolist(), y.tolist()):
        patient_class[g] = max(patient_class.get(g, 0), label)
    class_counts = Counter(patient_class.values())
    x = np.zeros((len(rows), 1))
    splits = None
    if len(class_counts) > 1 and min(class_counts.values()) >= n_folds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = list(splitter.split(x, y, groups))
        if any(len(val) == 0 for _, val in splits):
            splits = None
    if splits is None:
        log.info("folds: stratification by has_mass impossible here; using GroupKFold")
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = list(splitter.split(x, y, groups))
    fold_of: dict[str, int] = {}
    for k, (_, val) in enumerate(splits):
        for i in val:
            fold_of[ids[i]] = k
    return fold_of


def fold_rows(rows: Sequence[Mapping[str, str]], fold_of: Mapping[str, int]) -> list[dict[str, object]]:
    return [{"id": r["id"], "patient_id": r["patient_id"], "fold": fold_of[r["id"]]} for r in rows]


def write_folds(path: str | os.PathLike, rows: Sequence[Mapping[str, str]], fold_of: Mapping[str, int]) -> None:
    write_csv_atomic(path, fold_rows(rows, fold_of), FOLDS_COLUMNS)


def read_folds(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """id → (patient_id, fold) from folds.csv (errors name the file)."""
    path = Path(path)
    table = read_csv(path)
    if table and any(c not in table[0] for c in FOLDS_COLUMNS):
        raise ValueError(f"{path}: expected columns {', '.join(FOLDS_COLUMNS)}")
    out: dict[str, tuple[str, int]] = {}
    for r in table:
        try:
            out[r["id"]] = (r["patient_id"], int(r["fold"]))
        except ValueError:
            raise ValueError(f"{path}: fold of {r['id']!r} is not an integer: {r['fold']!r}") from None
    return out


def load_or_create_folds(
    path: str | os.PathLike, rows: Sequence[Mapping[str, str]], n_folds: int, seed: int, write: bool = True,
    assigned: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Reuse RUN/folds.csv if present (checked against `rows`), else assign and write it (`assigned`: the
    assignment `assign_folds(rows, n_folds, seed)` already gave, so it is not computed twice)."""
    path = Path(path)
    if path.is_file():
        saved = read_folds(path)
        current = {r["id"]: r["patient_id"] for r in rows}
        if set(saved) != set(current):
            extra, missing = sorted(set(saved) - set(current)), sorted(set(current) - set(saved))
            raise ValueError(
                f"{path}: its images differ from the prepared train split "
                f"({len(missing)} not in folds.csv, e.g. {missing[:3]}; {len(extra)} no longer in the data, e.g. {extra[:3]})"
            )
        for i, (pid, _) in saved.items():
            if current[i] != pid:
                raise ValueError(f"{path}: image {i!r} has patient {pid!r} there but {current[i]!r} in the manifest")
        found = sorted({f for _, f in saved.values()})
        if found != list(range(n_folds)):
            raise ValueError(f"{path}: holds folds {found}, but the config asks for n_folds={n_folds}")
        fold_of = {i: f for i, (_, f) in saved.items()}
    else:
        fold_of = dict(assigned) if assigned is not None else assign_folds(rows, n_folds, seed)
        if write:
            write_folds(path, rows, fold_of)
    check_patients_disjoint(fold_rows(rows, fold_of), "fold", where=str(path))  # type: ignore[arg-type]
    return fold_of
