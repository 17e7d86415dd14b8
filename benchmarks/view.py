"""Benchmark `mammoseg view` (not a test): the site's size per case and how fast its index opens.

1. **Size per case**: synthetic full-field DICOMs (default 4096 × 3328, `mammoseg.sources.synthetic`,
   manifest layout) with a hand-made prediction folder beside them (the synthetic reference masks as
   the predicted masks, a blurred copy as the probability map, so every layer is there), written
   with the default `--max-side 2048` and with `--full-resolution`. Reported: bytes per case of
   ``full/<f>.js`` (16-bit pixels, masks, probability map) and of the thumbnail, and seconds per case
   to write the site.
2. **Index of N cases** (default 200, small images: the index reads only data.js and the
   thumbnails): opened from file:// in headless Chromium (tests/chromium.py), `--repeat` times in
   one browser. Reported: the navigation's `domContentLoadedEventEnd` (the table is built by
   then), `loadEventEnd`, and the time until every thumbnail in the first screen has loaded.

    .venv/bin/python benchmarks/view.py --json view.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from mammoseg.io import write_csv_atomic, write_png, write_text_atomic  # noqa: E402
from mammoseg.sources.synthetic import write_synthetic_dataset  # noqa: E402
from mammoseg.view import write_view  # noqa: E402


def prediction_of(synth: Path, out: Path) -> Path:
    """A prediction folder for synth/'s DICOMs: its reference masks as predictions, a blurred copy as prob/."""
    rows = []
    for image in sorted((synth / "images").glob("*.dcm")):
        header = cv2.imread(str(synth / "masks" / f"{image.stem}.png"), cv2.IMREAD_GRAYSCALE)
        if header is None:  # no mass in this image: an empty prediction of the DICOM's size
            import pydicom
            ds = pydicom.dcmread(image, stop_before_pixels=True)
            header = np.zeros((int(ds.Rows), int(ds.Columns)), np.uint8)
        mask = (header > 0).astype(np.uint8) * 255
        prob = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 15)
        write_png(out / "masks" / f"{image.stem}.png", mask)
        write_png(out / "prob" / f"{image.stem}.png", np.round(prob * 65535).astype(np.uint16))
        rows.append({"id": image.stem, "input": str(image), "mask": f"masks/{image.stem}.png",
                     "height": mask.shape[0], "width": mask.shape[1], "grid": "original"})
    write_csv_atomic(out / "predictions.csv", rows, ("id", "input", "mask", "height", "width", "grid"))
    write_text_atomic(out / "predict.json", json.dumps({"inputs": [str(synth / "images")], "data_dirs": [],
                                                        "threshold": 0.5}))
    return out


def site_sizes(pred: Path, out: Path, max_side: int | None) -> dict[str, Any]:
    start = time.perf_counter()
    index = write_view(pred, out, max_side=max_side, progress=False)
    seconds = time.perf_counter() - start
    cases = sorted((out / "full").glob("*.js"))
    full = [p.stat().st_size for p in cases]
    thumbs = [p.stat().st_size for p in (out / "thumbs").glob("*.png")]
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"max_side": max_side, "cases": len(cases), "seconds_per_case": seconds / len(cases),
            "case_js_bytes_mean": statistics.mean(full), "case_js_bytes_max": max(full),
            "thumb_bytes_mean": statistics.mean(thumbs), "site_bytes_per_case": total / len(cases),
            "index": str(index)}


def index_timing(site: Path, repeat: int, profile: Path) -> dict[str, Any]:
    from chromium import Chromium

    browser = Chromium(shutil.which("chromium") or "chromium", profile)
    dcl, load, thumbs = [], [], []
    try:
        for _ in range(repeat):
            browser.load((site / "index.html").as_uri() + f"?r={time.monotonic()}")
            browser.wait_for("Array.from(document.querySelectorAll('#case-rows img'))"
                             ".filter(i => i.getBoundingClientRect().top < innerHeight).every(i => i.complete)")
            nav = browser.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                                   " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
            last = browser.evaluate("Math.max(0, ...performance.getEntriesByType('resource')"
                                    ".filter(e => e.name.includes('/thumbs/')).map(e => e.responseEnd))")
            dcl.append(nav[0])
            load.append(nav[1])
            thumbs.append(max(nav[1], last))
        rows = browser.evaluate("document.querySelectorAll('#case-rows tr').length")
    finally:
        browser.close()
    return {"rows_on_page": rows, "dom_content_loaded_ms_median": statistics.median(dcl),
            "load_event_ms_median": statistics.median(load), "first_screen_thumbs_ms_median": statistics.median(thumbs),
            "load_event_ms_all": load}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2, help="synthetic patients for the size (4 images each)")
    parser.add_argument("--shape", default="4096x3328", help="rows x columns of the size set's images")
    parser.add_argument("--index-cases", type=int, default=200, help="cases in the index timed in Chromium")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.shape.lower().split("x"))
    results: dict[str, Any] = {"shape": [rows, cols]}
    with tempfile.TemporaryDirectory(prefix="mammoseg-view-bench-") as tmp:
        root = Path(tmp)
        write_synthetic_dataset(root / "synth", patients=args.patients, fmt="manifest", shape=(rows, cols), seed=0,
                                progress=False)
        pred = prediction_of(root / "synth", root / "pred")
        results["default"] = site_sizes(pred, root / "site-default", 2048)
        results["full_resolution"] = site_sizes(pred, root / "site-full", None)
        n_patients = max(1, args.index_cases // 4)
        write_synthetic_dataset(root / "synth-index", patients=n_patients, fmt="manifest", shape=(256, 208), seed=1,
                                progress=False)
        small = prediction_of(root / "synth-index", root / "pred-index")
        site = write_view(small, root / "site-index", progress=False).parent
        results["index"] = {"cases": 4 * n_patients, **index_timing(site, args.repeat, root / "profile")}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
