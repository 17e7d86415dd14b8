"""Where images and masks come from: manifest CSV, INbreast, CBIS-DDSM, a DICOMweb server (and synthetic phantoms).

Every source yields `Record`s; `iter_records(fmt, src, **options)` picks the reader for a
`--format`. The synthetic generator (`mammoseg.sources.synthetic`) writes data in these
same layouts, so it is read back through the same readers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace

from mammoseg.manifest import UniqueIds
from mammoseg.sources.cbis_ddsm import iter_cbis_records
from mammoseg.sources.dicomweb import iter_dicomweb_records
from mammoseg.sources.inbreast import iter_inbreast_records
from mammoseg.sources.manifest import iter_manifest_records
from mammoseg.sources.records import Record

__all__ = ["FORMATS", "Record", "iter_records"]

log = logging.getLogger(__name__)

#: `--format` of `mammoseg prepare` → the reader of that source.
READERS = {
    "manifest": iter_manifest_records,
    "inbreast": iter_inbreast_records,
    "cbis-ddsm": iter_cbis_records,
    "dicomweb": iter_dicomweb_records,
}
#: The folder layouts (what `mammoseg synth` writes); `dicomweb` is a server, pulled into a cache folder.
FORMATS: tuple[str, ...] = ("manifest", "inbreast", "cbis-ddsm")


def iter_records(fmt: str, src: str | os.PathLike, **options) -> Iterator[Record]:
    """Records of the dataset at `src` in layout `fmt`; ids are made unique (`<id>_2`, ...).

    Options: manifest `csv=[...]`; inbreast `mass_names=("Mass",)`;
    cbis-ddsm `csv=[...]`, `keep_official_split=False`; dicomweb (`src` is the cache
    folder) `url=`, `studies=[...]`, `query=["Key=Value", ...]`, `netrc=`, `ca_bundle=`.
    An option the format does not take is an error, so a misspelt or misplaced
    command-line flag is not silently ignored.
    """
    reader = READERS.get(fmt)
    if reader is None:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(READERS)}")
    try:
        records = reader(src, **options)
    except TypeError as exc:
        raise ValueError(f"--format {fmt}: unsupported option(s) {sorted(options)} ({exc})") from exc
    ids = UniqueIds()
    for record in records:
        unique = ids.take(record.id)
        if unique != record.id:
            log.warning("%s: id %r is used twice; this image gets id %r", record.image, record.id, unique)
            record = replace(record, id=unique)
        yield record
