"""The demo's holdout Dice over several seeds, with and without the run's post-processing (not a test).

Each seed runs `mammoseg demo --seed S` in its own process (phantoms, split, folds and training all
follow the seed). Then, side by side on the same trained run, the holdout is predicted again with
the raw 0.5 threshold and every component kept (`--no-postprocessing`) and evaluated, so the effect
of the post-processing chosen on the out-of-fold predictions is measured on the same models:

- holdout mean Dice (± SD over images) per seed, with the run's post-processing and raw;
- false-positive images: mass-free holdout images with a non-empty predicted mask;
- the post-processing chosen (`postprocessing.json`) and the FROC mean sensitivity, when present;
- over seeds: mean ± SD of the holdout mean Dice, and its spread (max − min).

`--compare-no-crop` also prepares the same phantoms without the breast crop (same split, same
folds, same seed) and trains, predicts and evaluates that run the same two ways, so the crop's
effect is measured side by side on the same data.

A demo takes 10–15 minutes on 2 CPU cores; three seeds take most of an hour (twice that with
`--compare-no-crop`). A rerun over the same `--out` resumes every stage: finished folds are not
trained again, and the post-processing is chosen again only when it is missing or its folds changed.

    .venv/bin/python benchmarks/demo_seeds.py --seeds 0,1,2 --out /tmp/demo-seeds --json demo_seeds.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _mammoseg(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-m", "mammoseg", *args], check=True, env=env)


def _holdout(eval_dir: Path) -> dict[str, Any]:
    """Mean Dice, SD and the false-positive images of one evaluation folder."""
    summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    with open(eval_dir / "per_image.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    fp_images = [r["id"] for r in rows if r["ref_empty"] == "1" and r["pred_empty"] == "0"]
    froc = summary.get("froc") or {}
    return {"dice_mean": summary.get("dice_mean"), "dice_sd": summary.get("dice_sd"), "n": summary.get("n"),
            "n_mass_free": sum(r["ref_empty"] == "1" for r in rows), "fp_images": fp_images,
            "froc_mean_sensitivity": froc.get("mean_sensitivity")}


def _predict_and_evaluate(run: Path, prepared: Path, name: str, *flags: str) -> Path:
    """The holdout of `prepared` predicted by `run` into RUN/../NAME_pred and evaluated into NAME_eval."""
    pred, evaluation = run.parent / f"{name}_pred", run.parent / f"{name}_eval"
    _mammoseg("predict", "--run", str(run), "--input", str(prepared), "--split", "holdout", "--out", str(pred),
              "--save-prob", "--overwrite", "--no-progress", *flags)
    _mammoseg("evaluate", "--pred", str(pred), "--data", str(prepared), "--out", str(evaluation), "--overwrite",
              "--no-progress")
    return evaluation


def _figures(run: Path, evaluation: Path, raw_evaluation: Path) -> dict[str, Any]:
    chosen_path = run / "postprocessing.json"
    chosen = json.loads(chosen_path.read_text(encoding="utf-8")) if chosen_path.is_file() else None
    return {"postprocessed": _holdout(evaluation), "raw": _holdout(raw_evaluation), "postprocessing": chosen}


def _without_crop(seed: int, folder: Path) -> dict[str, Any]:
    """The demo's phantoms prepared without the crop, trained and evaluated as the demo does."""
    prepared, run = folder / "prepared-nocrop", folder / "run-nocrop"
    _mammoseg("prepare", "--format", "manifest", "--src", str(folder / "synthetic"), "--out", str(prepared),
              "--size", "256", "--holdout", "0.2", "--seed", str(seed), "--workers", "2", "--no-crop", "--no-progress")
    _mammoseg("train", "--config", "demo", "--data", str(prepared), "--out", str(run), "--no-progress", f"seed={seed}")
    evaluation = _predict_and_evaluate(run, prepared, "nocrop")
    return _figures(run, evaluation, _predict_and_evaluate(run, prepared, "nocrop_raw", "--no-postprocessing"))


def run_seed(seed: int, out: Path, compare_no_crop: bool = False) -> dict[str, Any]:
    """One demo and its raw-threshold counterpart (and, if asked, the same without the crop)."""
    folder = out / f"seed{seed}"
    start = time.perf_counter()
    _mammoseg("demo", "--out", str(folder), "--seed", str(seed), "--no-progress")
    minutes = (time.perf_counter() - start) / 60
    run = folder / "run"
    raw_eval = _predict_and_evaluate(run, folder / "prepared", "raw", "--no-postprocessing")
    result = {"seed": seed, "minutes": round(minutes, 1), **_figures(run, run / "eval", raw_eval)}
    if compare_no_crop:
        result["no_crop"] = _without_crop(seed, folder)
    return result


def _line(result: dict[str, Any]) -> str:
    post, raw = result["postprocessed"], result["raw"]
    return (f"holdout Dice {post['dice_mean']:.4f} ± {post['dice_sd']:.4f} (raw 0.5 threshold: {raw['dice_mean']:.4f}); "
            f"false-positive images {len(post['fp_images'])} of {post['n_mass_free']} mass-free (raw: "
            f"{len(raw['fp_images'])}); FROC mean sensitivity {post['froc_mean_sensitivity']}")


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "spread": max(values) - min(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated demo seeds (default 0,1,2)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the demos (one subfolder per seed)")
    parser.add_argument("--compare-no-crop", action="store_true",
                        help="also prepare, train and evaluate the same phantoms without the breast crop")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = []
    for seed in seeds:
        result = run_seed(seed, args.out, args.compare_no_crop)
        results.append(result)
        print(f"seed {seed}: {_line(result)}; {result['minutes']} min", flush=True)
        if "no_crop" in result:
            print(f"seed {seed} without the crop: {_line(result['no_crop'])}", flush=True)
    figures: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "seeds": results}
    variants = [("", lambda r: r)] + ([("no_crop_", lambda r: r["no_crop"])] if args.compare_no_crop else [])
    for prefix, pick in variants:
        dice = figures[f"{prefix}holdout_dice"] = _spread([pick(r)["postprocessed"]["dice_mean"] for r in results])
        raw = figures[f"{prefix}holdout_dice_raw"] = _spread([pick(r)["raw"]["dice_mean"] for r in results])
        print(f"over {len(seeds)} seeds{' without the crop' if prefix else ''}: holdout Dice {dice['mean']:.4f} ± "
              f"{dice['sd']:.4f} (min {dice['min']:.4f}, max {dice['max']:.4f}, spread {dice['spread']:.4f}); "
              f"raw 0.5 threshold {raw['mean']:.4f} ± {raw['sd']:.4f} (spread {raw['spread']:.4f})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
