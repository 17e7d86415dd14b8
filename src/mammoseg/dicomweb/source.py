"""Which studies of which DICOMweb server: the one description `prepare` and `predict` share, and its flags.

Why one type: `prepare --format dicomweb` (a training set with its SEG masks) and `predict
--dicomweb` (segment, store back) read the same servers the same way. One `DicomWebSource`
holds the server, the studies (UIDs and/or QIDO study filters), the cache and how to connect;
one argument group gives both commands the same flags with the same meaning. This module
needs none of the optional DICOMweb extra until `connect` is called.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Flags of the shared group, and their argparse destinations.
SOURCE_FLAGS = (("--study", "study"), ("--query", "query"), ("--cache", "cache"), ("--netrc", "netrc"),
                ("--ca-bundle", "ca_bundle"), ("--timeout", "timeout"), ("--max-instances", "max_instances"))
#: A search that finds more instances than this stops with an error (--max-instances raises it).
DEFAULT_MAX_INSTANCES = 100_000
CREDENTIALS_HELP = "credentials: MAMMOSEG_DICOMWEB_USER/_PASSWORD or _TOKEN, or a netrc file; never on the command line"


def parse_query(items: Sequence[str]) -> dict[str, str]:
    """`["ModalitiesInStudy=MG", "StudyDate=20240101-20241231"]` -> QIDO filters (a key given twice is an error)."""
    filters: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"--query {item!r}: expected KEY=VALUE, e.g. ModalitiesInStudy=MG")
        if key in filters:
            raise ValueError(f"--query {key} is given twice")
        filters[key] = value
    return filters


def instance_url(url: str, ref: Any) -> str:
    """The WADO-RS address of instance `ref` (an `InstanceRef`) on the server at `url`: how errors name it."""
    return f"{url}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"


def default_cache() -> Path:
    """The DICOMweb cache folder: $XDG_CACHE_HOME/mammoseg/dicomweb (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mammoseg" / "dicomweb"


@dataclass(frozen=True)
class DicomWebSource:
    """A server's studies: where they are, which ones, where fetched instances are kept, how to connect."""

    url: str
    cache: Path
    studies: tuple[str, ...] = ()
    query: tuple[str, ...] = ()  # QIDO study filters as "KEY=VALUE"
    netrc: str | None = None
    ca_bundle: str | None = None
    timeout: float | None = None  # seconds per request, whole answer included; None keeps the client's defaults
    max_instances: int | None = None  # results a search may find; None: DEFAULT_MAX_INSTANCES

    def filters(self, what: str) -> dict[str, str]:
        """The QIDO filters; `what` (the flag that asked) names the error when no study is given at all."""
        filters = parse_query(self.query)
        if not self.studies and not filters:
            raise ValueError(f"{what}: give the studies with --study UID and/or --query KEY=VALUE")
        return filters

    def asked(self) -> str:
        """The studies asked for, as a message names them."""
        return ", ".join([f"study {uid}" for uid in self.studies] + [f"{k}={v}" for k, v in parse_query(self.query).items()])

    def options(self) -> dict[str, Any]:
        """What a prepared folder records of the source (the cache is its `src`): url, studies, query,
        and the connection settings that were given."""
        recorded: dict[str, Any] = {"url": self.url, "studies": list(self.studies), "query": list(self.query)}
        for key in ("netrc", "ca_bundle", "timeout", "max_instances"):
            if getattr(self, key) is not None:
                recorded[key] = getattr(self, key)
        return recorded


def add_source_arguments(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The DICOMweb flags both `prepare --format dicomweb` and `predict --dicomweb` take; returns the group."""
    group = parser.add_argument_group(title, CREDENTIALS_HELP)
    group.add_argument("--study", action="append", default=[], metavar="UID", help="Study Instance UID (repeatable)")
    group.add_argument("--query", action="append", default=[], metavar="KEY=VALUE",
                       help="QIDO study filter, e.g. ModalitiesInStudy=MG or StudyDate=20240101-20241231 (repeatable)")
    group.add_argument("--cache", default=None, metavar="DIR",
                       help="where fetched instances are kept (default: ~/.cache/mammoseg/dicomweb)")
    group.add_argument("--netrc", default=None, metavar="FILE", help="netrc file with the server's credentials")
    group.add_argument("--ca-bundle", default=None, metavar="FILE", help="PEM file of CAs to trust besides the default")
    group.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help="longest time one request may take, its whole answer included (default: 600 s; "
                            "10 s to connect, 120 s without a byte)")
    group.add_argument("--max-instances", type=int, default=None, metavar="N",
                       help=f"stop with an error when the studies hold more than N instances "
                            f"(default {DEFAULT_MAX_INSTANCES})")
    return group


def source_flags_given(args: argparse.Namespace) -> list[str]:
    """The shared DICOMweb flags given on the command line (an error where no server is used)."""
    return [flag for flag, dest in SOURCE_FLAGS if getattr(args, dest)]


def source_from_args(url: str, args: argparse.Namespace) -> DicomWebSource:
    """The source the flags describe; files are made absolute, so a recorded source means the same later."""
    def absolute(path: str | None) -> str | None:
        return os.path.abspath(path) if path else None

    return DicomWebSource(
        url=url, cache=Path(args.cache).absolute() if args.cache else default_cache(), studies=tuple(args.study),
        query=tuple(args.query), netrc=absolute(args.netrc), ca_bundle=absolute(args.ca_bundle), timeout=args.timeout,
        max_instances=args.max_instances,
    )
