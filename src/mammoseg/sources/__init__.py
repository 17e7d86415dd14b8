"""Where images and masks come from: manifest CSV, INbreast, CBIS-DDSM, a DICOMweb server (and synthetic phantoms).

Every source yields `Record`s; `iter_records(fmt, src, **options)` picks the reader for a
`--format`. The synthetic generator (`mammoseg.sources.synthetic`) writes data in these
same layouts, so it is read back through the same readers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from mammoseg.sources.records import (
    MaskSpec,
    NoMask,
    PngMask,
    PolygonMask,
    Record,
    RoiDicomMask,
    SegMask,
    safe_id,
)

__all__ = [
    "FORMATS",
    "MaskSpec",
    "NoMask",
    "PngMask",
    "PolygonMask",
    "Record",
    "RoiDicomMask",
    "SegMask",
    "iter_records",
    "safe_id",
]

log = logging.getLogger(__name__)

#: The folder layouts of `mammoseg prepare --format` (and of `mammoseg synth`).
FORMATS: tuple[str, ...] = ("manifest", "inbreast", "cbis-ddsm")
#: Sources that are not a folder layout: a DICOMweb server (images and SEG masks pulled into a cache).
REMOTE_FORMATS: tuple[str, ...] = ("dicomweb",)


def iter_records(fmt: str, src: str | os.PathLike, **options) -> Iterator[Record]:
    """Records of the dataset at `src` in layout `fmt`; ids are made unique (`<id>_2`, ...).

    Options: manifest `csv=[...]`; inbreast `mass_names=("Mass",)`;
    cbis-ddsm `csv=[...]`, `keep_official_split=False`; dicomweb (`src` is the cache
    folder) `url=`, `studies=[...]`, `query=["Key=Value", ...]`, `netrc=`, `ca_bundle=`.
    An option the format does not take is an error, so a misspelt or misplaced
    command-line flag is not silently ignored.
    """
    if fmt == "manifest":
        from mammoseg.sources.manifest import iter_manifest_records as reader
    elif fmt == "inbreast":
        from mammoseg.sources.inbreast import iter_inbreast_records as reader
    elif fmt in ("cbis-ddsm", "cbis_ddsm", "cbis"):
        from mammoseg.sources.cbis_ddsm import iter_cbis_records as reader
    elif fmt == "dicomweb":
        from mammoseg.sources.dicomweb import iter_dicomweb_records as reader
    else:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(FORMATS + REMOTE_FORMATS)}")
    try:
        records = reader(src, **options)
    except TypeError as exc:
        raise ValueError(f"--format {fmt}: unsupported option(s) {sorted(options)} ({exc})") from exc
    seen: set[str] = set()
    for record in records:
        # Compared case-insensitively: ids become file names, and some file systems fold case.
        if record.id.lower() in seen:
            base, n = record.id, 2
            while f"{base}_{n}".lower() in seen:
                n += 1
            new_id = f"{base}_{n}"
            log.warning("%s: id %r is used twice; this image gets id %r", record.image, base, new_id)
            record = _replace_id(record, new_id)
        seen.add(record.id.lower())
        yield record


def _replace_id(record: Record, new_id: str) -> Record:
    from dataclasses import replace

    return replace(record, id=new_id)
