"""The dataset plan: who has which breast, which masses, stored how.

Every decision is drawn before any image is rendered, from generators seeded by
(`seed`, purpose, patient), so the same arguments always give the same dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammoseg.sources.synthetic.acquisition import Acquisition, device_for, draw_acquisition
from mammoseg.sources.synthetic.dicom_writer import Encoding
from mammoseg.sources.synthetic.masses import MassSpec
from mammoseg.sources.synthetic.phantom import LATERALITIES, VIEWS, BreastSpec, random_breast, random_mass


@dataclass(frozen=True)
class ImagePlan:
    """One image of the dataset before it is drawn."""

    patient_index: int  # 0-based
    laterality: str
    view: str
    breast: BreastSpec
    masses: tuple[MassSpec, ...]
    encoding: Encoding
    acquisition: Acquisition

    @property
    def has_mass(self) -> bool:
        return bool(self.masses)


def plan_dataset(patients: int, fmt: str, shape: tuple[int, int], seed: int) -> list[ImagePlan]:
    """Decide every image: breasts, masses (both views of a breast share them) and encodings.

    About a quarter of the breasts have no mass (none in `cbis-ddsm`, which lists only
    images with a mass); one breast has two masses when there are enough breasts.
    Photometric interpretation and VOI kind cycle over a shuffled order so every kind
    occurs as soon as there are a few images.
    """
    rng = np.random.default_rng([seed, 101])
    n_breasts = 2 * patients
    if fmt == "cbis-ddsm":
        empty: set[int] = set()
    else:
        n_empty = max(1, int(round(0.25 * n_breasts)))
        empty = {int(b) for b in rng.choice(n_breasts, size=n_empty, replace=False)}
    with_mass = [b for b in range(n_breasts) if b not in empty]
    double = int(rng.choice(with_mass)) if (len(with_mass) >= 3 or fmt == "cbis-ddsm") and with_mass else -1

    n_images = 2 * n_breasts
    order = np.empty(n_images, dtype=int)
    order[rng.permutation(n_images)] = np.arange(n_images)  # rank of each image in a shuffled cycle
    plans: list[ImagePlan] = []
    for p in range(patients):
        prng = np.random.default_rng([seed, 102, p])
        spacing = 0.07 if fmt == "inbreast" else round(float(prng.uniform(0.07, 0.1)), 3)
        for side, lat in enumerate(LATERALITIES):
            b = 2 * p + side
            breast = random_breast(prng)
            n_mass = 0 if b in empty else (2 if b == double else 1)
            masses = tuple(
                random_mass(prng, shape[1], spacing, depth=float(prng.uniform(0.25, 0.75))) for _ in range(n_mass)
            )
            for v, view in enumerate(VIEWS):
                rank = int(order[2 * b + v])
                acquisition = draw_acquisition(seed, p, side, view, device_for(fmt, p))
                plans.append(ImagePlan(p, lat, view, breast, masses, _encoding(fmt, rank, spacing, prng), acquisition))
    return plans


def _encoding(fmt: str, rank: int, spacing: float, rng: np.random.Generator) -> Encoding:
    """How the image of `rank` (its place in the shuffled cycle) is stored in layout `fmt`.

    An image without a VOI is For Processing: the standard requires a VOI on For
    Presentation images and forbids one otherwise.
    """
    if fmt == "inbreast":
        # INbreast's own conventions: 14-bit MONOCHROME2, 0.07 mm, and no VOI at all. (The real
        # files say For Presentation regardless; conformant files without a VOI are For Processing.)
        return Encoding(bits=14, photometric="MONOCHROME2", voi="none", intent="FOR PROCESSING", spacing=spacing)
    voi = ("window", "lut", "none")[rank % 3]
    if voi == "window" and rng.random() < 0.3:
        voi = "windows"
    bits = int(rng.choice([12, 13, 14]))
    rng.random()  # once chose the intent; still drawn so the later draws, hence a seed's pixels, stay the same
    return Encoding(
        bits=bits,
        photometric=("MONOCHROME2", "MONOCHROME1")[rank % 2],
        voi=voi,
        intent="FOR PROCESSING" if voi == "none" else "FOR PRESENTATION",
        spacing=spacing,
        lut_bits=int(rng.choice([12, 16])),
    )
