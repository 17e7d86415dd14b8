"""Prepared folders for the tests, in the layout `mammoseg prepare` writes: one factory instead of one per file.

`write_prepared(out, cases)` writes `images/`, `masks/` and a complete `manifest.csv` for
hand-made `Case`s (any manifest column can be set per case; the geometry columns default to
an unpadded square of the image's size). `make_prepared(out, ...)` builds a small dataset of
noisy images, most with a bright disc "mass", for tests that train or predict. Imported as
`from prepared_factory import ...` (tests/ is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammoseg.io import write_csv_atomic, write_png
from mammoseg.manifest import MANIFEST_COLUMNS


@dataclass
class Case:
    """One prepared image: uint16 `image`, uint8 0/255 `mask` (None: an empty mask), manifest extras."""

    id: str
    patient_id: str
    image: np.ndarray
    mask: np.ndarray | None = None
    split: str = "train"
    columns: dict[str, Any] = field(default_factory=dict)


def manifest_row(case: Case) -> dict[str, Any]:
    """The manifest row `prepare` would write for `case` (its `columns` override the defaults)."""
    size = case.image.shape[0]
    mask = case.mask if case.mask is not None else np.zeros(case.image.shape, np.uint8)
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row.update(
        id=case.id, patient_id=case.patient_id, image=f"images/{case.id}.png", mask=f"masks/{case.id}.png",
        split=case.split, orig_height=case.image.shape[0], orig_width=case.image.shape[1], laterality="L",
        view="CC", source="test", has_mass=int(bool(mask.any())), chest_side="left", pad_top=0, pad_bottom=0,
        pad_left=0, pad_right=0, size=size, src_image=f"/source/{case.id}.dcm",
    )
    row.update(case.columns)
    return row


def write_prepared(out: Path, cases: list[Case]) -> list[dict[str, Any]]:
    """Write the cases' images, masks and manifest.csv into `out`; returns the manifest rows."""
    rows = []
    for case in cases:
        write_png(out / "images" / f"{case.id}.png", case.image)
        mask = case.mask if case.mask is not None else np.zeros(case.image.shape, np.uint8)
        write_png(out / "masks" / f"{case.id}.png", mask)
        rows.append(manifest_row(case))
    write_csv_atomic(out / "manifest.csv", rows, MANIFEST_COLUMNS)
    return rows


def disc_cases(n_patients: int = 5, per_patient: int = 2, size: int = 64, holdout_patients: int = 1,
               seed: int = 0) -> list[Case]:
    """Noisy background (0.2–0.4) with a bright disc 'mass' (+0.5) in 2 of 3 images; the
    first `holdout_patients` patients are the holdout."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cases = []
    for p in range(n_patients):
        for j in range(per_patient):
            image = rng.random((size, size)) * 0.2 + 0.2
            mask = np.zeros((size, size), np.uint8)
            if (p + j) % 3 != 0:
                cy, cx = rng.integers(16, size - 16, 2)
                disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(5, 10)) ** 2
                image[disc] += 0.5
                mask[disc] = 255
            cases.append(Case(f"p{p}_{j}", f"P{p}", (np.clip(image, 0, 1) * 65535).astype(np.uint16), mask,
                              "holdout" if p < holdout_patients else "train"))
    return cases


def make_prepared(out: Path, **kwargs: Any) -> Path:
    """A small prepared folder of `disc_cases(**kwargs)`; returns `out`."""
    write_prepared(out, disc_cases(**kwargs))
    return out
