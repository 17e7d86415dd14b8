"""The patient-grouped, mass-stratified train/holdout split of a prepared folder.

Drawn once all images are known (a one-machine prepare, or the merge of its shards), from
the rows alone, so the same rows and seed always give the same split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


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
