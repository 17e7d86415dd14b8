"""Milliseconds per 448² float32 crop for exact (and near-exact) median filters, k = 3, 7, 11.

Not a test: timings depend on the machine and its load. The figures in docs/augmentations.md
came from:

    .venv/bin/python benchmarks/median.py --threads 1,2 --reps 7 --json median.json

Methods (all with replicated borders, as the Table 1 row):
  scipy            scipy.ndimage.median_filter(mode="nearest"), the CPU reference (one thread)
  opencv-f32       cv2.medianBlur on float32 (k <= 5 only), the reference for k <= 5
  opencv-u16       cv2.medianBlur on the image quantised to uint16 (k <= 5 only)
  histogram-u16    exact median of the uint16-quantised image: OpenCV's O(1) histogram median
                   of the high bytes, then the low byte by bisection over the window
  unfold-median    torch unfold in 16-row chunks + Tensor.median
  unfold-kth       torch unfold in 16-row chunks + Tensor.kthvalue (partial sort)
  network          mammoseg.training.median_blur: pruned min/max selection network (what we use)
  kornia           kornia.filters.median_blur(border_type="replicate"), when kornia imports

"exact" compares with the float reference bit for bit; "err" is the largest difference in
16-bit steps (1/65535). The methods run round-robin within each repetition, so a change of
machine load hits them alike; the median of `--reps` repetitions is printed. `--device cuda`
times the torch methods on the GPU (batch `--batch` crops per call).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mammoseg.training.median_blur import median_filter

CROP = 448
KERNELS = (3, 7, 11)
Method = Callable[[torch.Tensor, int], torch.Tensor]


def _per_image(fn: Callable[[np.ndarray, int], np.ndarray]) -> Method:
    def run(x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([fn(im, k) for im in x.cpu().numpy()]))
    return run


def _quantised(x: np.ndarray) -> np.ndarray:
    return np.round(x * 65535.0).astype(np.uint16)


def scipy_median(x: np.ndarray, k: int) -> np.ndarray:
    return ndimage.median_filter(x, size=k, mode="nearest")


def opencv_u16(x: np.ndarray, k: int) -> np.ndarray:
    return cv2.medianBlur(_quantised(x), k).astype(np.float32) / np.float32(65535.0)


def histogram_u16(x: np.ndarray, k: int, chunk: int = 16) -> np.ndarray:
    """Exact median of the uint16-quantised image (rounding is monotone: = round(float median))."""
    q = _quantised(x)
    high_median = cv2.medianBlur((q >> 8).astype(np.uint8), k).astype(np.int32)
    r, rank = k // 2, (k * k - 1) // 2
    windows = torch.from_numpy(np.pad(q.astype(np.int32), r, mode="edge"))
    out = np.empty(q.shape, np.int32)
    for y0 in range(0, q.shape[0], chunk):
        y1 = min(q.shape[0], y0 + chunk)
        win = windows[y0:y1 + 2 * r].unfold(0, k, 1).unfold(1, k, 1).reshape(y1 - y0, q.shape[1], k * k)
        hm = torch.from_numpy(high_median[y0:y1])[..., None]
        high = win >> 8
        target = rank - (high < hm).sum(-1, keepdim=True)
        low = torch.where(high == hm, win & 255, 256)
        acc = torch.zeros_like(hm)
        for bit in (128, 64, 32, 16, 8, 4, 2, 1):
            trial = acc + bit
            acc = torch.where((low < trial).sum(-1, keepdim=True) <= target, trial, acc)
        out[y0:y1] = ((hm << 8) + acc)[..., 0].numpy()
    return out.astype(np.float32) / np.float32(65535.0)


def unfold_select(op: str, chunk: int = 16) -> Method:
    def run(x: torch.Tensor, k: int) -> torch.Tensor:
        r, (n, h, w) = k // 2, x.shape
        padded = F.pad(x[:, None], (r, r, r, r), mode="replicate")[:, 0]
        out = torch.empty_like(x)
        for y0 in range(0, h, chunk):
            y1 = min(h, y0 + chunk)
            win = padded[:, y0:y1 + 2 * r].unfold(1, k, 1).unfold(2, k, 1).reshape(n, y1 - y0, w, k * k)
            sel = win.median(-1) if op == "median" else win.kthvalue((k * k + 1) // 2, -1)
            out[:, y0:y1] = sel.values
        return out
    return run


def methods(device: str) -> dict[str, tuple[Method, Callable[[int], bool]]]:
    """name → (method, which kernels it takes)."""
    every = lambda k: True  # noqa: E731
    table: dict[str, tuple[Method, Callable[[int], bool]]] = {}
    if device == "cpu":
        table.update({
            "scipy": (_per_image(scipy_median), every),
            "opencv-f32": (_per_image(cv2.medianBlur), lambda k: k <= 5),
            "opencv-u16": (_per_image(opencv_u16), lambda k: k <= 5),
            "histogram-u16": (_per_image(histogram_u16), every),
        })
    table.update({
        "unfold-median": (unfold_select("median"), every),
        "unfold-kth": (unfold_select("kth"), every),
        "network": (lambda x, k: median_filter(x, k, 32 << 20 if device == "cpu" else 1 << 30), every),
    })
    try:
        from kornia.filters import median_blur as kornia_median

        table["kornia"] = (lambda x, k: kornia_median(x[:, None], k, border_type="replicate")[:, 0], every)
    except ImportError:
        pass
    return table


def _timed(fn: Callable[[], torch.Tensor], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(device: str, threads: int, batch: int, reps: int) -> list[dict]:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    x = torch.rand(batch, CROP, CROP, generator=torch.Generator().manual_seed(0))
    reference = {k: np.stack([scipy_median(im, k) for im in x.numpy()]) for k in KERNELS}
    xd = x.to(device)
    rows = []
    for k in KERNELS:
        chosen = {n: fn for n, (fn, takes) in methods(device).items() if takes(k)}
        errors = {}
        for name, fn in chosen.items():  # also the warm-up
            got = fn(xd, k).cpu().numpy()
            errors[name] = float(np.abs(got.astype(np.float64) - reference[k]).max() * 65535.0)
        times: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(reps):
            for name, fn in chosen.items():
                times[name].append(_timed(lambda: fn(xd, k), device))
        for name in chosen:
            rows.append({"device": device, "threads": threads, "k": k, "method": name,
                         "ms_per_crop": 1000 * statistics.median(times[name]) / batch,
                         "exact": errors[name] == 0.0, "max_err_16bit_steps": errors[name]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch/OpenCV thread counts (CPU)")
    parser.add_argument("--batch", type=int, default=None, help="crops per call (default 1 on CPU, 16 on CUDA)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    batch = args.batch or (1 if args.device == "cpu" else 16)
    thread_counts = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [torch.get_num_threads()]
    print(f"torch {torch.__version__}, device {args.device}, {CROP}x{CROP} float32, batch {batch}, "
          f"median of {args.reps} round-robin repetitions; ms per crop (scipy is single-threaded)")
    print(f"{'method':<15} {'k':>3} {'threads':>7} {'ms/crop':>9} {'exact':>6} {'err':>6}")
    rows = []
    for threads in thread_counts:
        for row in measure(args.device, threads, batch, args.reps):
            rows.append(row)
            print(f"{row['method']:<15} {row['k']:>3} {threads:>7} {row['ms_per_crop']:>9.2f} "
                  f"{'yes' if row['exact'] else 'no':>6} {row['max_err_16bit_steps']:>6.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
