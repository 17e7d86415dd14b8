"""Benchmark `prepare` on full-field synthetic DICOMs (not a test).

Writes synthetic mammograms (default 4084x3328, the size of a full-field digital
mammogram) with `mammoseg.sources.synthetic`, then times `prepare_dataset` for each
worker count, each in a fresh process so the peak memory figures are its own. Reports
images/s overall and per worker, and the peak resident memory of the main process and
of the largest worker process (resource.getrusage ru_maxrss).

    .venv/bin/python benchmarks/prepare.py --images 4 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _measure(fmt: str, src: str, out: str, size: int, workers: int) -> dict:
    """Run in a child process: prepare once and report time and peak memory (MiB)."""
    from mammoseg.prepare import prepare_dataset

    start = time.perf_counter()
    summary = prepare_dataset(fmt, src, out, size=size, workers=workers, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN is the largest finished worker
    # (with workers=1 everything runs in this process and there is none).
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "workers": workers,
        "images": summary.n_images,
        "errors": summary.n_errors,
        "seconds": seconds,
        "peak_main_mib": own,
        "peak_worker_mib": children,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="about how many images to generate (4 per patient)")
    parser.add_argument("--shape", default="4084x3328", help="HxW of the synthetic mammograms")
    parser.add_argument("--size", type=int, default=512, help="prepared image size")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
    parser.add_argument("--format", default="inbreast", choices=("manifest", "inbreast", "cbis-ddsm"))
    parser.add_argument("--dir", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--_measure", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--_generate", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._measure:
        fmt, src, out, size, workers = args._measure
        print(json.dumps(_measure(fmt, src, out, int(size), int(workers))))
        return 0
    if args._generate:
        from mammoseg.sources.synthetic import write_synthetic_dataset

        src, patients, fmt, height, width = args._generate
        write_synthetic_dataset(src, int(patients), fmt, (int(height), int(width)), 0, progress=False)
        return 0

    height, width = (int(v) for v in args.shape.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mammoseg-bench-") as tmp:
        work = Path(args.dir) if args.dir else Path(tmp)
        src = work / "synth"
        # Generated in a child process: Linux carries a process's peak RSS over fork + exec,
        # so the measuring processes must not descend from one that held the generator's arrays.
        start = time.perf_counter()
        patients = str(math.ceil(args.images / 4))
        subprocess.run(
            [sys.executable, __file__, "--_generate", str(src), patients, args.format, str(height), str(width)],
            check=True,
        )
        print(f"generated synthetic {args.format} data {height}x{width} in {time.perf_counter() - start:.1f} s")
        results = []
        for workers in (int(w) for w in args.workers.split(",")):
            cmd = [sys.executable, __file__, "--_measure", args.format, str(src), str(work / f"prepared_w{workers}"),
                   str(args.size), str(workers)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            rate = result["images"] / result["seconds"]
            print(
                f"workers={workers}: {result['images']} images in {result['seconds']:.2f} s = {rate:.2f} images/s "
                f"({rate / workers:.2f} per worker); peak RSS main {result['peak_main_mib']:.0f} MiB, "
                f"largest worker {result['peak_worker_mib']:.0f} MiB; errors {result['errors']}"
            )
        print(json.dumps({"shape": [height, width], "size": args.size, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
