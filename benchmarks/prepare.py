"""Benchmark `prepare` on full-field synthetic DICOMs: images/s per worker and peak memory (not a test).

Writes synthetic mammograms (default 4084x3328, 16-bit uncompressed, the size of a full-field
digital mammogram; INbreast layout, so no VOI: the fallback window) with
`mammoseg.sources.synthetic`, then times `prepare_dataset` for each worker count, each run in
a fresh process so its peak memory is its own.

- **images/s per worker** is the steady rate: images finished after the first `workers`
  results, over the time they took, divided by `workers`. Start-up (imports, listing, spawning
  workers, the first image) and the end (manifest) are reported apart, and so is the plain
  rate over the whole call, start-up included.
- One worker runs in the measuring process with OpenCV on one thread, as each worker process
  is, so the figure is per core (`prepare --workers 1` itself lets OpenCV use every core).
- **images per CPU-second** counts the CPU time of the processes that prepared images, less
  the workers' own start-up (measured apart): a per-core figure that other load on a shared
  machine does not lower, unlike the wall-clock rates.
- **peak RSS per worker** is the largest resident set of a process that prepared images
  (resource.getrusage ru_maxrss): the main process with one worker, the largest worker
  process otherwise.
- `--stages` also times the stages of `prepare_one` on every image (median ms, one OpenCV
  thread as in a worker; see benchmarks/prepare_stages.py).
- `--compare-with REV` runs the same measurements on the `src/` of git revision REV too,
  side by side (e.g. the commit before a speed change).

The machine is shared on developer boxes: use `--repeat` and read medians.

    .venv/bin/python benchmarks/prepare.py --images 12 --workers 1,2 --stages --json prepare.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _steady(finished: list[float], start: float, end: float, workers: int, images: int) -> dict[str, float]:
    """Rates and start-up from the times results arrived (see module docstring)."""
    total = end - start
    overall = images / total if total > 0 else float("nan")
    if len(finished) > workers and finished[-1] > finished[workers - 1]:
        rate = (len(finished) - workers) / (finished[-1] - finished[workers - 1])
    else:  # too few images for a steady rate: the whole call
        rate = overall
    return {
        "seconds": total,
        "images_per_s_with_startup": overall,
        "images_per_s": rate,
        "images_per_s_per_worker": rate / workers,
        "startup_s": max(0.0, (finished[0] - start) - workers / rate) if finished else float("nan"),
        "finish_s": end - finished[-1] if finished else float("nan"),
    }


def _measure(fmt: str, src: str, out: str, size: int, workers: int) -> dict[str, Any]:
    """Run in a child process: prepare once; rates, start-up and peak memory (MiB)."""
    import cv2

    import mammoseg
    from mammoseg.prepare import pipeline as prepare

    if workers == 1:  # one core, as in a worker process (prepare's own worker initialiser does this)
        cv2.setNumThreads(1)

    finished: list[float] = []
    results = getattr(prepare, "_results", None)
    if results is not None:  # timestamp each finished image as the main process receives it

        def timed(*args: Any, **kwargs: Any):
            for item in results(*args, **kwargs):
                finished.append(time.perf_counter())
                yield item

        prepare._results = timed
    before = _cpu_seconds()
    start = time.perf_counter()
    options = prepare.PrepareOptions(size=size, workers=workers, progress=False)
    summary = prepare.prepare_dataset(fmt, src, out, options, overwrite=True)
    end = time.perf_counter()
    own_cpu, workers_cpu = (after - first for after, first in zip(_cpu_seconds(), before))
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN is the largest finished worker.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    startup_cpu = 0.0 if workers == 1 else _startup_cpu(workers)
    cpu = own_cpu if workers == 1 else workers_cpu - startup_cpu
    return {
        "workers": workers,
        "images": summary.n_images,
        "errors": summary.n_errors,
        **_steady(finished, start, end, workers, summary.n_images),
        # CPU seconds the processes that prepared images spent on them (worker start-up, measured
        # apart, taken off): a per-core rate that other load on a shared machine does not lower.
        "cpu_s": cpu,
        "worker_startup_cpu_s": startup_cpu,
        "images_per_cpu_s": summary.n_images / cpu if cpu > 0 else float("nan"),
        "peak_rss_mib_per_worker": own if workers == 1 else children,
        "peak_rss_mib_main": own,
        "mammoseg": str(Path(mammoseg.__file__).parent),
    }


def _startup_cpu(workers: int) -> float:
    """CPU seconds that `workers` prepare worker processes take to start, refuse one record each
    (a listing problem: no image is read) and stop."""
    from mammoseg.prepare.image import _init_worker, _run_one
    from mammoseg.sources import Record
    from mammoseg.workers import run_tasks

    idle = Record(id="idle", image=Path("idle.dcm"), patient_id="", problem="benchmark: start-up only")
    before = _cpu_seconds()[1]
    for _ in run_tasks(_run_one, [(idle, Path("."), 512)] * workers, workers, initializer=_init_worker):
        pass
    return _cpu_seconds()[1] - before


def _cpu_seconds() -> tuple[float, float]:
    """(user + system CPU seconds of this process, of its finished children)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _child(args: list[str], pythonpath: str | None) -> dict[str, Any]:
    """Run this script with `args` in a fresh interpreter; its last stdout line as JSON."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _export_revision(rev: str, into: Path) -> str:
    """`src/` of git revision `rev` under `into`; the folder to put on PYTHONPATH."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into / "src")


def _machine() -> dict[str, Any]:
    import cv2
    import numpy
    import pydicom

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "pydicom": pydicom.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def _summarise(code: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry per (code, workers): medians over the repeats, the largest peak memory."""
    keys = ("images_per_s_per_worker", "images_per_s", "images_per_s_with_startup", "startup_s", "seconds",
            "images_per_cpu_s")
    entry: dict[str, Any] = {"code": code, "workers": runs[0]["workers"], "images": runs[0]["images"],
                             "errors": max(r["errors"] for r in runs)}
    entry.update({k: statistics.median(r[k] for r in runs) for k in keys})
    entry["images_per_s_per_worker_best"] = max(r["images_per_s_per_worker"] for r in runs)
    entry["peak_rss_mib_per_worker"] = max(r["peak_rss_mib_per_worker"] for r in runs)
    entry["peak_rss_mib_main"] = max(r["peak_rss_mib_main"] for r in runs)
    entry["runs"] = runs
    return entry


def _print_results(results: list[dict[str, Any]]) -> None:
    print(f"{'code':<16}{'workers':>8}{'img/s/worker':>14}{'best':>8}{'with start-up':>15}"
          f"{'img/CPU-s':>11}{'start-up s':>12}{'peak RSS/worker MiB':>21}")
    for r in results:
        print(f"{r['code']:<16}{r['workers']:>8}{r['images_per_s_per_worker']:>14.2f}"
              f"{r['images_per_s_per_worker_best']:>8.2f}{r['images_per_s_with_startup'] / r['workers']:>15.2f}"
              f"{r['images_per_cpu_s']:>11.2f}{r['startup_s']:>12.2f}{r['peak_rss_mib_per_worker']:>21.0f}")


def _print_stages(stages: list[dict[str, Any]]) -> None:
    labels = list(dict.fromkeys(label for s in stages for label in s["ms_median"]))
    print(f"\nper-stage ms per image (median of {stages[0]['images_timed']} images, one thread)")
    print(f"{'stage':<22}" + "".join(f"{s['code']:>18}" for s in stages))
    for label in labels:
        cells = "".join(f"{s['ms_median'][label]:>18.1f}" if label in s["ms_median"] else f"{'-':>18}" for s in stages)
        print(f"{label:<22}{cells}")
    print(f"{'peak RSS MiB':<22}" + "".join(f"{s['peak_rss_mib']:>18.0f}" for s in stages))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12, help="about how many images to generate (4 per patient)")
    parser.add_argument("--shape", default="4084x3328", help="HxW of the synthetic mammograms")
    parser.add_argument("--size", type=int, default=512, help="prepared image size")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
    parser.add_argument("--format", default="inbreast", choices=("manifest", "inbreast", "cbis-ddsm"))
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count (medians are reported)")
    parser.add_argument("--stages", action="store_true", help="also time the stages of prepare_one")
    parser.add_argument("--compare-with", metavar="REV", help="also measure the src/ of this git revision")
    parser.add_argument("--json", metavar="FILE", help="write the figures to FILE as JSON")
    parser.add_argument("--dir", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--_measure", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--_stages", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--_generate", nargs=5, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _run_child_mode(args: argparse.Namespace) -> bool:
    """The hidden modes run in child processes; True if one ran."""
    if args._measure:
        fmt, src, out, size, workers = args._measure
        print(json.dumps(_measure(fmt, src, out, int(size), int(workers))))
    elif args._stages:
        from prepare_stages import time_stages  # benchmarks/ is this script's folder, first on sys.path

        fmt, src, size, repeat = args._stages
        print(json.dumps(time_stages(fmt, src, int(size), int(repeat))))
    elif args._generate:
        from mammoseg.sources.synthetic import write_synthetic_dataset

        src, patients, fmt, height, width = args._generate
        write_synthetic_dataset(src, int(patients), fmt, (int(height), int(width)), 0, progress=False)
    else:
        return False
    return True


def _measure_all(args: argparse.Namespace, work: Path, src: Path, codes: list[tuple[str, str | None]]) -> dict:
    results, stages = [], []
    for code, pythonpath in codes:
        for workers in (int(w) for w in args.workers.split(",")):
            runs = [_child(["--_measure", args.format, str(src), str(work / f"prepared_w{workers}"), str(args.size),
                            str(workers)], pythonpath) for _ in range(args.repeat)]
            results.append(_summarise(code, runs))
        if args.stages:
            stage = _child(["--_stages", args.format, str(src), str(args.size), str(args.repeat)], pythonpath)
            stages.append({"code": code, **stage})
    return {"results": results, "stages": stages}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if _run_child_mode(args):
        return 0
    height, width = (int(v) for v in args.shape.lower().split("x"))
    facts = {"benchmark": "prepare", "format": args.format, "shape": [height, width], "size": args.size,
             "repeat": args.repeat, "machine": _machine()}
    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        work = Path(args.dir) if args.dir else Path(tmp)
        src = work / "synth"
        # Generated in a child process: Linux carries a process's peak RSS over fork + exec,
        # so the measuring processes must not descend from one that held the generator's arrays.
        start = time.perf_counter()
        patients = str(math.ceil(args.images / 4))
        if (src / "synth.json").is_file():
            print(f"using the synthetic data in {src} (delete it to generate new data)")
        else:
            subprocess.run([sys.executable, __file__, "--_generate", str(src), patients, args.format, str(height),
                            str(width)], check=True)
            print(f"generated synthetic {args.format} data {height}x{width} in {time.perf_counter() - start:.1f} s")
        codes: list[tuple[str, str | None]] = [("working tree", None)]
        if args.compare_with:
            codes.insert(0, (args.compare_with, _export_revision(args.compare_with, Path(tmp) / "compare")))
        figures = {**facts, **_measure_all(args, work, src, codes)}
    _print_results(figures["results"])
    if figures["stages"]:
        _print_stages(figures["stages"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
