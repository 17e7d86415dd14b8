"""The dataset driver: `write_synthetic_dataset` plans the dataset, renders each phantom (with the
film markers of `SynthStyle`) and hands it to the writer of the chosen layout
(`mammoseg.sources.synthetic.layouts`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mammoseg.dicom.checks import ReadLimits
from mammoseg.folders import open_output_folder
from mammoseg.io import write_text_atomic
from mammoseg.sources import FORMATS
from mammoseg.sources.synthetic.layouts import OWNED_ENTRIES, WRITERS, SynthSummary
from mammoseg.sources.synthetic.phantom import (
    LATERALITIES,
    VIEWS,
    Phantom,
    add_collimator_border,
    add_film_label,
    render_phantom,
)
from mammoseg.sources.synthetic.plan import ImagePlan, plan_dataset

log = logging.getLogger(__name__)


def _check_readable_shape(shape: tuple[int, int]) -> None:
    """Refuse phantoms `prepare` and `predict` would refuse to read (the DICOM reader's size and aspect limits)."""
    limits = ReadLimits()
    height, width = shape
    if height * width > limits.max_pixels:
        raise ValueError(f"--shape {height}x{width}: {height * width / 1e6:.0f} Mpx is more than the "
                         f"{limits.max_pixels / 1e6:.0f} Mpx mammoseg reads")
    if max(height, width) > limits.max_aspect * min(height, width):
        raise ValueError(f"--shape {height}x{width}: an aspect ratio beyond {limits.max_aspect:g}:1, which mammoseg "
                         "does not read as a mammogram")


@dataclass(frozen=True)
class SynthStyle:
    """How the files look besides their content: CBIS-DDSM's folder `naming` (`new` or `old`), and
    `markers`, the non-breast content of real films (a label on every image, a collimator strip on
    every fourth; off: the images of versions before it, byte for byte)."""

    naming: str = "new"
    markers: bool = True


def write_synthetic_dataset(
    out: str | os.PathLike,
    patients: int = 12,
    fmt: str = "manifest",
    shape: tuple[int, int] = (1000, 800),
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    style: SynthStyle = SynthStyle(),
) -> SynthSummary:
    """Write `patients` synthetic patients (CC and MLO of both breasts) to `out` in layout `fmt`.

    Refuses a non-empty `out` unless `overwrite` (which then removes only what this
    generator writes: images/, masks/, manifest.csv, AllDICOMs/, AllXML/, CBIS-DDSM/, the
    CBIS CSVs, synth.json). `style` picks CBIS-DDSM's folder naming and whether the films carry
    a bright label ("L CC") and collimator strips (`SynthStyle`).
    Every file is written atomically; the same arguments give byte-identical files.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if patients < 1:
        raise ValueError(f"--patients must be at least 1, got {patients}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    naming, markers = style.naming, style.markers
    if naming not in ("new", "old"):
        raise ValueError(f"CBIS-DDSM naming must be 'new' or 'old', got {naming!r}")
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 64:
        raise ValueError(f"--shape must be at least 64x64, got {shape[0]}x{shape[1]}")
    _check_readable_shape(shape)
    open_output_folder(out, "synth", owned=OWNED_ENTRIES, overwrite=overwrite).close()

    plans = plan_dataset(patients, fmt, shape, seed)
    writer = WRITERS[fmt](out, seed, shape, patients, naming)
    for index, plan in enumerate(tqdm(plans, desc=f"synth {fmt}", unit="image", disable=not progress)):
        rng = np.random.default_rng([seed, 104, plan.patient_index, LATERALITIES.index(plan.laterality),
                                     VIEWS.index(plan.view)])
        phantom = render_phantom(rng, shape, plan.laterality, plan.view, mass=plan.masses, breast=plan.breast)
        if markers:
            add_markers(seed, index, plan, phantom)
        writer.add(index, plan, phantom, rng)
    summary = writer.finish()
    settings = {"format": fmt, "patients": patients, "shape": list(shape), "seed": seed, "naming": naming,
                "n_images": summary.n_images, "n_with_mass": summary.n_with_mass}
    if markers:
        settings["markers"] = True
    write_text_atomic(out / "synth.json", json.dumps(settings, indent=2) + "\n")
    log.debug("wrote %d synthetic images (%d with a mass) of %d patients to %s",
              summary.n_images, summary.n_with_mass, patients, out)
    return summary


def add_markers(seed: int, index: int, plan: ImagePlan, phantom: Phantom) -> None:
    """A film label on every image, a collimator strip on every fourth, drawn from a generator of
    their own so the rest of the image is the same with or without them."""
    rng = np.random.default_rng([seed, 106, plan.patient_index, LATERALITIES.index(plan.laterality),
                                 VIEWS.index(plan.view)])
    if index % 4 == 3:
        add_collimator_border(phantom)
    add_film_label(rng, phantom, f"{plan.laterality} {plan.view}")
