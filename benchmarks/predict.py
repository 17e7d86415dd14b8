"""Seconds per mammogram for fold-ensemble prediction on CPU, DICOM read to mask written (not a test).

Writes a few synthetic full-field DICOMs (default 2000x1600) with
`mammoseg.sources.synthetic`, saves `--folds` random-weight checkpoints of each model at
`--size` px, and times `mammoseg.inference.predict.predict` on the DICOM folder: read + window,
pad/resize, the ensemble's forward passes, mapping back to the original grid, and writing
mask + overlay. Loading the fold models is timed separately (paid once per run).

It also times the ensemble's forward pass alone on a batch of `--batch-size` random images,
the folds looped (`ensemble_probability`, what predict runs) and as one batched model
(`StackedEnsemble`: stacked weights, torch.vmap): `loop_s` and `stacked_s` (best of
`--repeats`), and their largest probability difference. `--ensemble-only` skips the DICOMs.

    .venv/bin/python benchmarks/predict.py --images 4 --size 512 --folds 5
    .venv/bin/python benchmarks/predict.py --ensemble-only --size 256 --folds 3 --batch-size 2 \
        --models resnet22-unet,resnet22-fpn,resnet34-unet,resnet34-fpn --json loop-vs-stacked.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch


def make_run(run: Path, encoder: str, decoder: str, folds: int, size: int) -> None:
    from mammoseg.checkpoint import save_checkpoint
    from mammoseg.config import config_from_dict, save_config
    from mammoseg.models import build_model

    save_config(config_from_dict({"name": "benchmark", "model": {"encoder": encoder, "decoder": decoder,
                                                                 "encoder_weights": None}}), run / "config.yaml")

    for k in range(folds):
        torch.manual_seed(k)
        model = build_model(encoder, decoder)
        save_checkpoint(run / f"fold{k}" / "best.pt", model, model.model_spec, {"mean": 0.3, "std": 0.25},
                        {"name": "benchmark"}, image_size=size, fold=k, epoch=1, val_loss=1.0)


def time_loop_vs_stacked(run: Path, size: int, batch: int, repeats: int, device: str) -> dict:
    """Seconds per batch of the looped and the stacked ensemble forward pass (best of `repeats`)."""
    from mammoseg.inference.ensemble import StackedEnsemble, ensemble_probability, load_ensemble

    members = load_ensemble(run, device).members
    stacked = StackedEnsemble(members)
    images = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    timings = {}
    with torch.inference_mode():
        for name, fn in (("loop", lambda: ensemble_probability(members, images)), ("stacked", lambda: stacked(images))):
            out = fn()  # warm-up
            best = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                if device != "cpu":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
            timings[name] = (best, out)
    diff = float((timings["loop"][1] - timings["stacked"][1]).abs().max())
    return {"loop_s": timings["loop"][0], "stacked_s": timings["stacked"][0], "stacked_max_abs_diff": diff,
            "ensemble_batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="mammograms to predict (rounded up to 4 per patient)")
    parser.add_argument("--shape", default="2000x1600", help="DICOM size HxW")
    parser.add_argument("--size", type=int, default=512, help="model input size")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--models", default="resnet22-unet,resnet34-unet")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of loop vs stacked (best counts)")
    parser.add_argument("--ensemble-only", action="store_true", help="only loop vs stacked, no DICOM prediction")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    args = parser.parse_args()
    results = []

    from mammoseg.inference.ensemble import load_ensemble
    from mammoseg.inference.predict import PredictOptions, predict
    from mammoseg.sources.synthetic import write_synthetic_dataset

    h, w = (int(v) for v in args.shape.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        tmp = Path(tmp)
        if not args.ensemble_only:
            write_synthetic_dataset(tmp / "synth", patients=math.ceil(args.images / 4), shape=(h, w), seed=0,
                                    progress=False)
        dicoms = sorted((tmp / "synth" / "images").glob("*.dcm"))[: args.images]
        print(f"{len(dicoms)} DICOMs {h}x{w}, {args.folds}-fold ensemble at {args.size} px, device {args.device}, "
              f"torch threads {os.cpu_count()}, batch {args.batch_size}, tta {args.tta}")
        for name in args.models.split(","):
            encoder, decoder = name.split("-")
            run = tmp / name
            make_run(run, encoder, decoder, args.folds, args.size)
            compare = time_loop_vs_stacked(run, args.size, args.batch_size, args.repeats, args.device)
            print(f"{name:15s} ensemble forward, batch {args.batch_size}: loop {compare['loop_s']:6.2f} s | stacked "
                  f"{compare['stacked_s']:6.2f} s | max |diff| {compare['stacked_max_abs_diff']:.2g}")
            if args.ensemble_only:
                results.append({"model": name, "folds": args.folds, "size": args.size, "device": args.device,
                                "threads": torch.get_num_threads(), **compare})
                continue
            start = time.perf_counter()
            load_ensemble(run, args.device)
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            options = PredictOptions(tta=args.tta, batch_size=args.batch_size, device=args.device, progress=False)
            summary = predict(run, [str(p) for p in dicoms], tmp / f"pred-{name}", options)
            total = time.perf_counter() - start
            assert summary["n_predicted"] == len(dicoms), summary
            per_image = (total - load_s) / len(dicoms)
            print(f"{name:15s} load {load_s:6.2f} s (once) | {per_image:6.2f} s per mammogram "
                  f"({per_image / args.folds:5.2f} s per fold model) | whole predict() {total:6.2f} s")
            results.append({"model": name, "folds": args.folds, "images": len(dicoms), "shape": [h, w],
                             "device": args.device, "load_s": load_s, "s_per_mammogram": per_image,
                             "s_per_fold_model": per_image / args.folds, "predict_s": total, **compare})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
