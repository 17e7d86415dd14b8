"""Seconds per image for the four models: forward (eval, no_grad) and forward+backward (train).

Not a test: timings depend on the machine and its load. Example (the figures in the
models report came from this, on the 2-core development machine):

    .venv/bin/python benchmarks/models.py --size 512 --batch 2 --reps 2 --threads 1 --channels-last

Each configuration runs `--warmup` untimed iterations, then the median of `--reps` timed
ones is divided by the batch size. `--channels-last` adds a channels_last run beside the
plain eager (contiguous NCHW) reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mammoseg.models import build_model, count_parameters

MODELS = ["resnet34-unet", "resnet34-fpn", "resnet22-unet", "resnet22-fpn"]


def _time(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, size: int, batch: int, warmup: int, reps: int, channels_last: bool) -> tuple[float, float]:
    """(forward, forward+backward) seconds per image."""
    encoder, decoder = name.split("-")
    torch.manual_seed(0)
    model = build_model(encoder, decoder)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, model.in_channels, size, size).contiguous(memory_format=fmt)
    target = (torch.rand(batch, 1, size, size) > 0.5).float()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()

    model.eval()
    fwd = _time(forward, warmup, reps)
    model.train()
    fwd_bwd = _time(train_step, warmup, reps)
    return fwd / batch, fwd_bwd / batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated encoder-decoder names")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--channels-last", action="store_true", help="also time channels_last memory format")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    args = parser.parse_args(argv)
    results = []
    if args.threads:
        torch.set_num_threads(args.threads)
    formats = [False, True] if args.channels_last else [False]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size}x{args.size}, "
          f"batch {args.batch}, median of {args.reps} after {args.warmup} warm-up; seconds per image")
    print(f"{'model':<15} {'params':>11} {'layout':<14} {'forward':>9} {'fwd+bwd':>9}")
    for name in args.models.split(","):
        encoder, decoder = name.split("-")
        params = count_parameters(build_model(encoder, decoder))
        for cl in formats:
            fwd, fwd_bwd = bench(name, args.size, args.batch, args.warmup, args.reps, cl)
            layout = "channels_last" if cl else "NCHW (eager)"
            print(f"{name:<15} {params:>11,} {layout:<14} {fwd:>9.3f} {fwd_bwd:>9.3f}", flush=True)
            results.append({"model": name, "parameters": params, "layout": layout, "size": args.size,
                            "batch": args.batch, "forward_s_per_image": fwd, "forward_backward_s_per_image": fwd_bwd})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
