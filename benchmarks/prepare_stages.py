"""Where `prepare` spends its time per image: the stages of `prepare_one`, timed in place.

Used by `benchmarks/prepare.py` (in its measuring child processes); not a test. The stage
functions are wrapped by name where `prepare_one` looks them up, so the figures are those of
the real code path, whatever version of mammoseg is on `sys.path` (a name a version lacks is
left out). Times are exclusive: a wrapped function called inside another one is charged to
its own stage only, so the stages plus "other" add up to the time of `prepare_one`.
"""

from __future__ import annotations

import importlib
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: (stage label, [(module, attribute path), ...]) in pipeline order.
STAGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("read file + header", (("mammoseg.dicom.reader", "read_dataset"), ("mammoseg.dicom.reader", "_read_dataset"))),
    ("header checks", (("mammoseg.dicom.reader", "check_header"),)),
    ("read + decode pixels", (("mammoseg.dicom.reader", "decode_pixels"), ("mammoseg.dicom.reader", "_decode_pixels"))),
    ("window (VOI LUT)", (("mammoseg.dicom.reader", "_window"),)),
    ("chest-wall side", (("mammoseg.geometry", "chest_wall_side"), ("mammoseg.dicom.reader", "chest_wall_side"))),
    ("image pad + resize", (("mammoseg.geometry", "apply_to_image"),)),
    ("mask load", (("mammoseg.sources.records", "Record.load_mask"),)),
    ("mask pad + resize", (("mammoseg.prepare.image", "apply_to_mask"),)),
    ("PNG encode", (("cv2", "imencode"),)),
    ("PNG file write", (("mammoseg.prepare.image", "write_png"),)),
)


class _Clock:
    """Exclusive time per stage: a nested stage's time is taken off its caller's."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # per open call: [time spent in nested stages]

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([0.0])
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                nested = self._stack.pop()[0]
                self.totals[label] += spent - nested
                if self._stack:
                    self._stack[-1][0] += spent

        return timed


def _install(clock: _Clock) -> list[str]:
    """Wrap every stage function that exists; the labels of those that do."""
    found = []
    for label, targets in STAGES:
        for module_name, attribute in targets:
            owner: Any = importlib.import_module(module_name)
            *parents, name = attribute.split(".")
            for parent in parents:
                owner = getattr(owner, parent, None)
            if owner is not None and hasattr(owner, name):
                setattr(owner, name, clock.wrap(label, getattr(owner, name)))
                if label not in found:
                    found.append(label)
    return found


def time_stages(fmt: str, src: str, size: int, repeat: int) -> dict[str, Any]:
    """Run `prepare_one` on every record of `src` `repeat` times (after one warm-up image) with
    one OpenCV thread, as a worker does; median ms per image for each stage."""
    import cv2

    from mammoseg.prepare import image as prepare
    from mammoseg.sources import iter_records

    cv2.setNumThreads(1)
    clock = _Clock()
    found = _install(clock)
    records = [r for r in iter_records(fmt, Path(src)) if not r.problem]
    per_image: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="mammoseg-stages-") as tmp:
        out = Path(tmp)
        (out / "images").mkdir()
        (out / "masks").mkdir()
        prepare.prepare_one(records[0], out, size)  # warm-up: lazy imports, first allocations
        for _ in range(repeat):
            for record in records:
                clock.totals.clear()
                start, cpu = time.perf_counter(), time.process_time()
                prepare.prepare_one(record, out, size)
                total, cpu = time.perf_counter() - start, time.process_time() - cpu
                for label in found:
                    per_image[label].append(clock.totals.get(label, 0.0))
                per_image["other"].append(total - sum(clock.totals.values()))
                per_image["total"].append(total)
                per_image["total CPU"].append(cpu)
    return {
        "images_timed": len(per_image["total"]),
        "ms_median": {label: 1e3 * statistics.median(values) for label, values in per_image.items()},
        "ms_min": {label: 1e3 * min(values) for label, values in per_image.items()},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
