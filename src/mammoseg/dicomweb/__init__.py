"""DICOMweb access: find, fetch and classify mammograms on a PACS or archive, store SEGs back.

`client` holds `DicomWeb` (QIDO-RS search, WADO-RS retrieve into a cache, STOW-RS store,
the SEG look-up that keeps `--store` idempotent) and `classify`; `session` the credentials,
TLS, timeout and retry rules every request follows. Needs `pip install 'mammoseg[dicomweb]'`.
"""

from __future__ import annotations

from mammoseg.dicomweb.client import (
    DicomWeb,
    FetchResult,
    InstanceRef,
    StoredSeg,
    StoreOutcome,
    Verdict,
    cache_path,
    classify,
    matching_seg,
)
from mammoseg.dicomweb.session import ENV_PASSWORD, ENV_TOKEN, ENV_USER, DicomWebError, resolve_auth

__all__ = [
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_USER",
    "DicomWeb",
    "DicomWebError",
    "FetchResult",
    "InstanceRef",
    "StoreOutcome",
    "StoredSeg",
    "Verdict",
    "cache_path",
    "classify",
    "matching_seg",
    "resolve_auth",
]
