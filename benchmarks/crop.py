"""What the breast-region crop buys on the demo phantoms (not a test).

Writes synthetic phantoms (default 10 patients at 640x512, the demo's size, with film labels and
collimator strips as `mammoseg synth` writes them), prepares them twice — with the breast crop
(`prepare`'s default) and with `--no-crop` — and reports, per folder:

- **breast fraction**: the share of the prepared square the breast covers (the phantom's breast
  region, mapped with each image's plan), mean over the images;
- **mass diameter**: the equivalent diameter (2·sqrt(area/π)) of each prepared mass mask, in
  prepared pixels, mean over the images with a mass;
- with the crop, the breast and mass pixels left outside the crop box (a breast's faint edge that
  the window maps to 0 cannot be seen; a mass pixel left out would be lost) and the labels and
  strips left inside it.

    .venv/bin/python benchmarks/crop.py --patients 10 --json crop.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mammoseg.geometry import PadResize, apply_to_mask
from mammoseg.io import read_png
from mammoseg.manifest import load_manifest
from mammoseg.prepare import PrepareOptions, prepare_dataset
from mammoseg.sources.synthetic import write_synthetic_dataset
from mammoseg.sources.synthetic.dataset import add_markers
from mammoseg.sources.synthetic.phantom import LATERALITIES, VIEWS, Phantom, render_phantom
from mammoseg.sources.synthetic.plan import plan_dataset


def phantoms(patients: int, shape: tuple[int, int], seed: int) -> dict[str, Phantom]:
    """The phantoms `write_synthetic_dataset` draws (manifest layout), by image id."""
    found = {}
    for index, plan in enumerate(plan_dataset(patients, "manifest", shape, seed)):
        rng = np.random.default_rng([seed, 104, plan.patient_index, LATERALITIES.index(plan.laterality),
                                     VIEWS.index(plan.view)])
        phantom = render_phantom(rng, shape, plan.laterality, plan.view, mass=plan.masses, breast=plan.breast)
        add_markers(seed, index, plan, phantom)
        found[f"SYN{plan.patient_index + 1:04d}_{plan.laterality}_{plan.view}"] = phantom
    return found


def measure(folder: Path, drawn: dict[str, Phantom]) -> dict[str, Any]:
    """Breast fraction and mass diameter of one prepared folder; what its crop boxes left in or out."""
    fractions, diameters = [], []
    breast_out = mass_out = markers_in = 0
    for row in load_manifest(folder):
        phantom, plan = drawn[row["id"]], PadResize.from_row(row)
        fractions.append(float((apply_to_mask(phantom.breast.astype(np.uint8), plan) > 0).mean()))
        mask = read_png(folder / row["mask"]) > 0
        if mask.any():
            diameters.append(2 * math.sqrt(mask.sum() / math.pi))
        inside = np.zeros(phantom.breast.shape, bool)
        inside[plan.crop_top:plan.orig_height - plan.crop_bottom, plan.crop_left:plan.orig_width - plan.crop_right] = True
        breast_out += int((phantom.breast & ~inside).sum())
        mass_out += int((phantom.mask & ~inside).sum())
        for r0, r1, c0, c1 in filter(None, (phantom.label_box, phantom.border_box)):
            markers_in += bool(inside[r0:r1, c0:c1].any())
    return {"images": len(fractions), "breast_fraction": float(np.mean(fractions)),
            "mass_diameter_px": float(np.mean(diameters)), "images_with_mass": len(diameters),
            "breast_pixels_outside_box": breast_out, "mass_pixels_outside_box": mass_out,
            "markers_inside_box": markers_in,
            "breast_pixels": int(sum(p.breast.sum() for p in drawn.values()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--shape", default="640x512", help="phantom HxW (default 640x512, the demo's)")
    parser.add_argument("--size", type=int, default=512, help="prepared size (default 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mammoseg-crop-") as tmp:
        root = Path(tmp)
        write_synthetic_dataset(root / "synth", args.patients, "manifest", shape, args.seed, progress=False)
        drawn = phantoms(args.patients, shape, args.seed)
        figures: dict[str, Any] = {"patients": args.patients, "shape": list(shape), "size": args.size,
                                   "seed": args.seed}
        for name, crop in (("no_crop", False), ("crop", True)):
            out = root / name
            prepare_dataset("manifest", root / "synth", out, PrepareOptions(size=args.size, progress=False, crop=crop))
            figures[name] = measure(out, drawn)
    for name in ("no_crop", "crop"):
        f = figures[name]
        print(f"{name:8s} breast covers {100 * f['breast_fraction']:.1f} % of the prepared square; mean mass diameter "
              f"{f['mass_diameter_px']:.1f} px ({f['images']} images, {f['images_with_mass']} with a mass)")
    c = figures["crop"]
    print(f"crop boxes: {c['breast_pixels_outside_box']} of {c['breast_pixels']} breast pixels outside "
          f"({c['breast_pixels_outside_box'] / c['breast_pixels']:.2e}), {c['mass_pixels_outside_box']} mass pixels "
          f"outside, {c['markers_inside_box']} labels/strips inside")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
