"""Training throughput vs data-loading throughput (not a test).

Reports, at the paper's geometry (512 px prepared images, 448 px crops, every Table 1
augmentation), on the chosen device:

- model images/s: forward + backward + Adam step of the training loop on a fixed batch
  (normalisation and the loss included, no data loading);
- data-loader images/s: PNG decoding + augmentation + collation through the real
  DataLoader with `--workers` processes (no model).

Whichever is lower limits training on that machine.

    python benchmarks/train_throughput.py --steps 5 --batch 4 --workers 2 --device cpu
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_images(out: Path, n: int, size: int) -> list[dict[str, str]]:
    """Mammogram-like uint16 images (smooth blobs + noise) and disc masks."""
    import cv2

    from mammoseg.io import write_png

    rng = np.random.default_rng(0)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 8)
        image = np.clip((noise - noise.min()) / (np.ptp(noise) + 1e-6), 0, 1)
        disc = (yy - size // 2) ** 2 + (xx - size // 3) ** 2 < (size // 12) ** 2
        write_png(out / "images" / f"{i}.png", (image * 65535).astype(np.uint16))
        write_png(out / "masks" / f"{i}.png", disc.astype(np.uint8) * 255)
        rows.append({"id": str(i), "image": f"images/{i}.png", "mask": f"masks/{i}.png"})
    return rows


def bench_loader(data: Path, rows, crop: int, size: int, batch: int, workers: int, steps: int) -> float:
    from mammoseg.augment import build_train_transform
    from mammoseg.config import ExperimentConfig
    from mammoseg.dataset import PreparedDataset, SeededSampler
    from mammoseg.training.data import make_loader

    ds = PreparedDataset(data, rows, build_train_transform(crop, size))
    base = torch.utils.data.RandomSampler(range(len(ds)), replacement=True, num_samples=batch * (steps + 2))
    cfg = ExperimentConfig(num_workers=workers)
    loader = make_loader(ds, SeededSampler(base, seed=0), batch, cfg, torch.device("cpu"), persistent=False)
    it = iter(loader)
    next(it)  # start the workers, first batch
    next(it)
    t = time.perf_counter()
    n = 0
    for images, _ in it:
        n += images.shape[0]
    return n / (time.perf_counter() - t)


def bench_model(encoder: str, decoder: str, crop: int, batch: int, steps: int, device: torch.device) -> float:
    from mammoseg.config import ExperimentConfig
    from mammoseg.losses import focal_tversky_loss
    from mammoseg.models import build_model
    from mammoseg.schedule import build_optimiser
    from mammoseg.training.engine import BatchPipeline, choose_precision, optimisation_step

    cfg = ExperimentConfig()
    model = build_model(encoder, decoder).to(device).train()
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, _ = build_optimiser(cfg, model.parameters())
    pipeline = BatchPipeline(device, {"mean": 0.3, "std": 0.2}, model.in_channels, choose_precision(cfg, device),
                             channels_last)
    images = torch.rand(batch, 1, crop, crop)
    masks = (torch.rand(batch, 1, crop, crop) > 0.9).float()

    def step() -> None:
        x, m = pipeline.to_device(images, masks)
        optimisation_step(model, x, m, focal_tversky_loss, opt, pipeline)

    for _ in range(2):  # warm-up (kernel selection, allocator)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="prepared image size")
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=16, help="distinct images written for the loader")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--models", default="resnet22-unet,resnet34-unet", help="comma-separated encoder-decoder")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        rows = write_images(Path(tmp), args.images, args.size)
        loader_rate = bench_loader(Path(tmp), rows, args.crop, args.size, args.batch, args.workers, args.steps * 2)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.size} px images, {args.crop} px crops, batch {args.batch}")
    print(f"data loader (decode + all augmentations, {args.workers} workers): {loader_rate:7.1f} images/s")
    for name in args.models.split(","):
        encoder, decoder = name.split("-")
        rate = bench_model(encoder, decoder, args.crop, args.batch, args.steps, device)
        limit = "model" if rate < loader_rate else "data loader"
        print(f"train step {name:>14} (fwd + bwd + Adam):       {rate:7.1f} images/s  -> limited by the {limit}")


if __name__ == "__main__":
    main()
