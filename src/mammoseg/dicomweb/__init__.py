"""DICOMweb access: find, fetch and classify mammograms on a PACS or archive, store SEGs back.

`source` holds `DicomWebSource` (which studies of which server, the cache, how to connect)
and the flags `prepare` and `predict` share; `client` holds `DicomWeb` (QIDO-RS search,
WADO-RS retrieve into a cache, STOW-RS store, the SEG and SR look-ups that keep `--store`
idempotent); `instances` the values answers describe (`InstanceRef`, `classify`, the stored
SEGs and SRs); `session` the credentials, TLS, timeout and retry rules every
request follows; `limits` the deadline and size caps that keep a misbehaving server from
holding a run or filling memory; `answers` the checks every answer passes before it is used.
All but `source` need `pip install 'mammoseg[dicomweb]'`; they are imported on first use, so
the command line works without the extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from mammoseg.dicomweb.source import DicomWebSource, default_cache, instance_url, parse_query

_LAZY = {
    "DicomWeb": "mammoseg.dicomweb.client",
    **dict.fromkeys(("FetchResult", "InstanceRef", "StoredSeg", "StoreOutcome", "Verdict", "cache_path", "classify",
                     "matching_seg"), "mammoseg.dicomweb.instances"),
    **dict.fromkeys(("ENV_PASSWORD", "ENV_TOKEN", "ENV_USER", "DicomWebError", "resolve_auth"),
                    "mammoseg.dicomweb.session"),
    **dict.fromkeys(("Limits",), "mammoseg.dicomweb.limits"),
}

__all__ = [  # noqa: F822 - the client's names are resolved by __getattr__
    "ENV_PASSWORD", "ENV_TOKEN", "ENV_USER", "DicomWeb", "DicomWebError", "DicomWebSource", "FetchResult",
    "InstanceRef", "Limits", "StoreOutcome", "StoredSeg", "Verdict", "cache_path", "classify", "default_cache",
    "instance_url", "matching_seg", "parse_query", "resolve_auth",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
