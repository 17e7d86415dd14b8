"""The whole pipeline on synthetic phantoms, with no data and no network (`make demo`).

synthesise phantom DICOMs → prepare at 256 px → train with the `demo` preset → predict
the holdout with the fold ensemble → evaluate → report. Each stage resumes, so rerunning
the same command after an interruption continues where it stopped.

Layout: OUT/synthetic (DICOMs + manifest CSV), OUT/prepared, OUT/run (with holdout_pred/
and eval/ inside, as `reproduce` lays out a model), OUT/report, OUT/view (the results site).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mammoseg.config import load_config
from mammoseg.evaluation.runs import RANDOM_INIT
from mammoseg.folders import open_output_folder
from mammoseg.io import write_text_atomic
from mammoseg.prepare import PrepareOptions, prepare_dataset
from mammoseg.report import write_report
from mammoseg.reproduce import StageOptions, run_model
from mammoseg.sources.synthetic import write_synthetic_dataset
from mammoseg.view import write_view

DEMO_SIZE = 256
#: Phantom size (height, width) in pixels: mammogram-like aspect, small enough to be quick.
DEMO_SHAPE = (640, 512)
DEMO_PATIENTS = 40
SYNTH_DONE = ".demo-synth.json"
#: What the demo writes into OUT (and what --overwrite removes).
OUTPUTS = ("synthetic", "prepared", "run", "report", "view")


def _synthesise(out: Path, patients: int, seed: int, echo: Any, progress: bool = True) -> Path:
    synth = out / "synthetic"
    marker = synth / SYNTH_DONE
    settings = {"patients": patients, "seed": seed, "shape": list(DEMO_SHAPE), "format": "manifest", "markers": True}
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done == settings:
            echo(f"[1/5] synthesise: {synth} already holds {patients} phantom patients; skipped")
            return synth
        raise FileExistsError(
            f"{synth}: holds phantoms made with other settings ({done}); use --overwrite or another --out"
        )
    echo(f"[1/5] synthesise: {patients} phantom patients ({DEMO_SHAPE[0]}x{DEMO_SHAPE[1]} DICOMs) -> {synth}")
    # An interrupted synthesis starts again; `synth` itself refuses a folder it did not write.
    write_synthetic_dataset(synth, patients, "manifest", DEMO_SHAPE, seed, overwrite=synth.exists(), progress=progress)
    write_text_atomic(marker, json.dumps(settings) + "\n")
    return synth


def run_demo(
    out_dir: str | os.PathLike,
    patients: int = DEMO_PATIENTS,
    seed: int = 0,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    echo: Any = print,
) -> dict[str, Any]:
    """Run every stage into `out_dir`; returns the holdout evaluation summary plus `report`.

    A rerun continues where an interrupted one stopped; `overwrite` starts again, removing only
    what the demo wrote (OUT must be a folder the demo made, or new).
    """
    if patients < 5:
        raise ValueError(f"--patients {patients}: the demo needs at least 5 patients (train folds and a holdout)")
    out = Path(out_dir)
    start = time.perf_counter()
    with open_output_folder(out, "demo", owned=OUTPUTS, overwrite=overwrite, resume=True):
        summary = _run_stages(out, patients, seed, device, progress, echo)
    minutes = (time.perf_counter() - start) / 60
    echo("")
    echo(f"report: {summary['report']}")
    echo(f"view:   {summary['view']}")
    if summary.get("dice_mean") is not None:
        echo(f"holdout mean Dice: {float(summary['dice_mean']):.4f} ± {float(summary.get('dice_sd') or 0):.4f} "
             f"over {summary.get('n')} images ({minutes:.1f} min)")
    return summary


def _run_stages(out: Path, patients: int, seed: int, device: str | None, progress: bool, echo: Any) -> dict[str, Any]:
    synth = _synthesise(out, patients, seed, echo, progress)
    prepared = out / "prepared"
    echo(f"[2/5] prepare: {synth} -> {prepared} ({DEMO_SIZE} px)")
    prepare_dataset("manifest", synth, prepared, PrepareOptions(size=DEMO_SIZE, holdout=0.2, seed=seed,
                                                                workers=min(2, os.cpu_count() or 1), progress=progress))
    cfg = load_config("demo", [f"seed={seed}"])
    echo("[3/5] train, [4/5] predict the holdout and evaluate:")
    result = run_model(cfg, "demo", prepared, out / "run", RANDOM_INIT, dataset="synthetic phantoms",
                       stages=StageOptions(device, progress, echo))
    echo(f"[5/5] report -> {out / 'report'}")
    report = write_report([result.run_dir], out / "report", data_dir=prepared, overwrite=True)
    view = write_view(result.run_dir, out / "view", data_dir=prepared, overwrite=True, progress=progress)
    return {**(result.summary or {}), "report": str(report), "view": str(view)}
