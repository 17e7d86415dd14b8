"""Seconds per batch of the whole fold ensemble: onnxruntime (CPU) on the one-graph export vs
PyTorch (the folds looped, as predict runs them). Not a test.

Saves `--folds` random-weight checkpoints of each model at `--size` px, exports them with
`mammoseg export --ensemble` (one graph: each fold's normalisation, sigmoid and the mean inside),
and times one call on a batch of `--batch` random images in [0, 1] (best of `--repeats`, after a
warm-up), with the largest probability difference between the two.

    .venv/bin/python benchmarks/onnx_ensemble.py --size 256 --folds 3 --json onnx-ensemble.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def best_of(fn, repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(tmp: Path, name: str, args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    from mammoseg.bundle.onnx import export_ensemble_onnx
    from mammoseg.inference.ensemble import ensemble_probability, load_ensemble
    from predict import make_run

    encoder, decoder = name.split("-")
    run = tmp / name
    make_run(run, encoder, decoder, args.folds, args.size)
    start = time.perf_counter()
    export_ensemble_onnx(run, tmp / f"{name}.onnx", sample_size=min(args.size, 256))
    export_s = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(tmp / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
    members = load_ensemble(run).members
    images = torch.rand(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    feed = {"image": images.numpy()}
    with torch.inference_mode():
        torch_s = best_of(lambda: ensemble_probability(members, images), args.repeats)
        expected = ensemble_probability(members, images).numpy()
    onnx_s = best_of(lambda: session.run(None, feed), args.repeats)
    diff = float(np.abs(session.run(None, feed)[0] - expected).max())
    print(f"{name:15s} {args.folds} folds, batch {args.batch} at {args.size} px: onnxruntime {onnx_s:6.3f} s | "
          f"PyTorch {torch_s:6.3f} s | max |prob diff| {diff:.2g} | export {export_s:.1f} s")
    return {"model": name, "folds": args.folds, "size": args.size, "batch": args.batch, "onnxruntime_s": onnx_s,
            "pytorch_s": torch_s, "max_abs_prob_diff": diff, "export_s": export_s,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="resnet22-unet,resnet34-unet")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mammoseg-onnx-bench-") as tmp:
        results = [bench_model(Path(tmp), name, args) for name in args.models.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
