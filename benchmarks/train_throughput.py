"""Training throughput, the whole story in one process (not a test).

For each model and precision variant, side by side on the same data and machine:

- step-only images/s: forward + backward + Adam on one batch already on the device;
- end-to-end images/s: the real training loop — `mammoseg.training.engine.train_one_epoch`
  over the fold's DataLoader (PNG decode + host Table 1 rows in workers, device rows on the
  training device, normalisation, step), exactly what `mammoseg train` runs;
- loader-only images/s: the same DataLoader drained without a model;
- host data path images/s per core: one sample at a time in this process, one thread;
- FLOPs per image (torch.utils.flop_counter, forward + backward at the crop size), the
  achieved TFLOP/s, and on CUDA the model FLOP utilisation against a bf16 matmul peak
  measured in the same run.

    python benchmarks/train_throughput.py --models resnet22-unet --batch 8 --json bench.json
    python benchmarks/train_throughput.py --device cuda --batch 32 --variants fp32,bf16,compiled --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mammoseg.config import ExperimentConfig, ModelConfig  # noqa: E402
from mammoseg.distributed import DistInfo  # noqa: E402
from mammoseg.manifest import load_manifest  # noqa: E402
from mammoseg.training.data import build_fold_data  # noqa: E402
from mammoseg.training.engine import BatchPipeline, choose_precision, optimisation_step, train_one_epoch  # noqa: E402
from mammoseg.training.losses import focal_tversky_loss  # noqa: E402
from mammoseg.training.model import build_fold_model, uses_channels_last, wrap_model  # noqa: E402
from mammoseg.training.schedule import build_optimiser  # noqa: E402

from prepared_factory import Case, write_prepared  # noqa: E402

VARIANTS = {  # name -> config keys: eager float32; bf16 autocast + channels_last; the same compiled
    "fp32": {"amp": False, "cpu_bf16": False, "channels_last": False, "compile": False},
    "bf16": {"amp": True, "cpu_bf16": True, "channels_last": True, "compile": False},
    "compiled": {"amp": True, "cpu_bf16": True, "channels_last": True, "compile": True},
}


def write_data(out: Path, n: int, size: int) -> list[dict]:
    """Mammogram-like uint16 images (smooth texture + noise), a disc mass in most."""
    import cv2

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    cases = []
    for i in range(n):
        tissue = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 8)
        image = np.clip((tissue - tissue.min()) / (np.ptp(tissue) + 1e-6), 0, 1)
        mask = ((yy - size // 2) ** 2 + (xx - size // 3) ** 2 < (size // 12) ** 2).astype(np.uint8) * 255
        cases.append(Case(str(i), f"P{i}", (image * 65535).astype(np.uint16), mask if i % 4 else None))
    return write_prepared(out, cases)


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls (after two warm-up calls: kernel choice, allocator), synchronised on CUDA."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def flops_per_image(net: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        focal_tversky_loss(net(x), masks).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def matmul_peak_tflops(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    """bf16 dense matmul TFLOP/s on this device: the denominator of the model FLOP utilisation."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = timed(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e12


def host_rate(data_set, samples: int) -> float:
    """Host data path (decode + host rows) images/s on one core, in this process."""
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    start = time.perf_counter()
    for j in range(samples):
        data_set[(j % len(data_set), j)]
    return samples / (time.perf_counter() - start)


def bench(name: str, variant: str, args: argparse.Namespace, data: Path, rows: list[dict]) -> dict:
    encoder, decoder = name.split("-")
    device = torch.device(args.device)
    cfg = replace(ExperimentConfig(), model=ModelConfig(encoder=encoder, decoder=decoder, encoder_weights=None),
                  batch_size=args.batch, crop_size=args.crop, num_workers=args.workers, augmentation="table1",
                  cache_images=True, **VARIANTS[variant])
    info = DistInfo()
    fold = build_fold_data(cfg, data, rows, rows[: args.batch], 0, device, info, progress=False)
    core = build_fold_model(cfg, 0, device, info).train()
    net = wrap_model(core, cfg, device, info)
    optimiser, _ = build_optimiser(cfg, core.parameters())
    pipeline = BatchPipeline(device, {"mean": 0.3, "std": 0.2}, core.in_channels, choose_precision(cfg, device),
                             uses_channels_last(cfg, device))
    fold.sampler.set_epoch(1)
    x, masks = pipeline.to_device(next(iter(fold.train_loader)))
    step_s = timed(lambda: optimisation_step(net, x, masks, focal_tversky_loss, optimiser, pipeline), args.steps)
    epoch_s = timed(lambda: train_one_epoch(net, fold.train_loader, focal_tversky_loss, optimiser, pipeline), 1)
    loader_s = timed(lambda: sum(b[0].shape[0] for b in fold.train_loader), 1)
    images = len(fold.train_loader) * args.batch
    gflop = flops_per_image(core, x.float(), masks) / 1e9
    step_rate = args.batch / step_s
    result = {
        "model": name, "variant": variant, "device": str(device), "batch": args.batch, "size": args.size,
        "crop": args.crop, "workers": fold.train_loader.num_workers, "torch_threads": torch.get_num_threads(),
        "step_images_per_s": step_rate, "end_to_end_images_per_s": images / epoch_s,
        "loader_images_per_s": images / loader_s, "host_images_per_s_per_core": None,
        "gflop_per_image": gflop, "achieved_tflops": gflop * step_rate / 1e3, "mfu": None,
    }
    result["end_to_end_over_step"] = result["end_to_end_images_per_s"] / step_rate
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet22-unet", help="comma-separated encoder-decoder names")
    p.add_argument("--variants", default="fp32", help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--size", type=int, default=512, help="prepared image size")
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--images", type=int, default=32, help="images in the benchmark's training set (one epoch)")
    p.add_argument("--steps", type=int, default=5, help="timed repeats of the step-only measurement")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: as `mammoseg train`)")
    p.add_argument("--host-samples", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    args = p.parse_args()
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    results = []
    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        write_data(Path(tmp), args.images, args.size)
        rows = load_manifest(tmp)  # as training reads them (strings)
        for name in args.models.split(","):
            for variant in args.variants.split(","):
                torch.set_num_threads(threads)
                results.append(bench(name, variant, args, Path(tmp), rows))
        fold_cfg = ExperimentConfig(crop_size=args.crop, num_workers=0, cache_images=True)
        fold = build_fold_data(fold_cfg, Path(tmp), rows, rows[:1], 0, torch.device("cpu"), DistInfo(), False)
        host = host_rate(fold.train_set, args.host_samples)
    peak = matmul_peak_tflops(device) if device.type == "cuda" else None
    for r in results:
        r["host_images_per_s_per_core"] = host
        if peak:
            r["bf16_matmul_peak_tflops"] = peak
            r["mfu"] = r["achieved_tflops"] / peak
    print(f"device {device}, {args.size} px images, {args.crop} px crops, batch {args.batch}, every Table 1 row; "
          f"host data path {host:.0f} images/s per core")
    print(f"{'model':>15} {'variant':>8} {'step':>8} {'end-to-end':>11} {'ratio':>6} {'loader':>8} "
          f"{'GFLOP/img':>10} {'TFLOP/s':>8} {'MFU':>6}")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "—"
        print(f"{r['model']:>15} {r['variant']:>8} {r['step_images_per_s']:8.2f} {r['end_to_end_images_per_s']:11.2f} "
              f"{r['end_to_end_over_step']:6.2f} {r['loader_images_per_s']:8.1f} {r['gflop_per_image']:10.1f} "
              f"{r['achieved_tflops']:8.3f} {mfu:>6}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
