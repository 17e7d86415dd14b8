"""Images per second of the Table 1 data path: host part per core, device rows per batch.

Not a test: timings depend on the machine and its load. The figures in docs/augmentations.md
came from:

    .venv/bin/python benchmarks/augment.py --samples 64 --reps 5 --json augment.json

Measures, side by side in one process (round-robin repetitions, medians):
  host-all     the all-on-host reference pipeline (every row, median blur included), 1 core
  host-split   the host part of the split pipeline (median blur and cutout only drawn), 1 core
  device-rows  `apply_device_rows` on batches of `--batch` split-pipeline outputs, on
               `--device` (the caller at `--threads` torch threads; on the CPU the median
               itself runs on one), reported per image
Per-sample seeds are derive_seed(0, 0, i) as in training, so both pipelines draw the same
rows for the same sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import cv2
import numpy as np
import torch

from mammoseg.seeding import derive_seed, seed_transform
from mammoseg.training.augment import build_train_transform
from mammoseg.training.device_augment import apply_device_rows


def phantom(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random 16-bit-grid image in [0, 1] and a disc mask."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random((size, size), dtype=np.float32), (0, 0), 8)
    image = (image - image.min()) / (image.max() - image.min())
    image = np.round(image * 65535) / np.float32(65535)
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 8) ** 2).astype(np.uint8)
    return image.astype(np.float32), mask


def run_host(transform, image, mask, seeds) -> list[dict]:
    outs = []
    for s in seeds:
        seed_transform(transform, s)
        outs.append(transform(image=image, mask=mask))
    return outs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--crop", type=int, default=448)
    parser.add_argument("--samples", type=int, default=64, help="samples per repetition")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the device rows on CPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    image, mask = phantom(args.size)
    seeds = [derive_seed(0, 0, i) for i in range(args.samples)]
    ref = build_train_transform(args.crop, args.size)
    split = build_train_transform(args.crop, args.size, device_rows=True)
    outs = run_host(split, image, mask, seeds)
    images = torch.from_numpy(np.stack([o["image"] for o in outs]))[:, None].to(args.device)
    params = torch.from_numpy(np.stack([o["device_params"] for o in outs]))

    def device_rows() -> None:
        torch.set_num_threads(args.threads)
        for i in range(0, len(seeds), args.batch):
            apply_device_rows(images[i:i + args.batch], params[i:i + args.batch])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def host(transform):
        def run() -> None:
            torch.set_num_threads(1)
            run_host(transform, image, mask, seeds)
        return run

    cases = {"host-all": host(ref), "host-split": host(split), "device-rows": device_rows}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.reps):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    fired = params[:, 0].float().mean().item()
    print(f"{args.size} px → crop {args.crop}, {args.samples} samples (median blur drawn by {fired:.0%}), "
          f"median of {args.reps} round-robin repetitions; device rows on {args.device}, batch {args.batch}")
    rows = []
    for name, ts in times.items():
        seconds = statistics.median(ts)
        where = "1 core" if name != "device-rows" else (
            f"{args.device}; caller has {args.threads} torch threads, the CPU median uses 1")
        rows.append({"case": name, "images_per_s": args.samples / seconds,
                     "ms_per_image": 1000 * seconds / args.samples, "where": where})
        print(f"{name:<12} {args.samples / seconds:>9.1f} images/s  {1000 * seconds / args.samples:>8.2f} ms/image  ({where})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
