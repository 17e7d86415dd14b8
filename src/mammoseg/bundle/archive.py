"""A model bundle (`.mseg`) read back: its manifest checked, every member's SHA-256 verified
before anything in it is used, then unpacked into a private cache as a run folder.

Why a run folder: everything that loads a run (`load_ensemble`, which checks every fold against
config.yaml; `run_id`; `predict`; `Segmenter`) then works on a bundle unchanged. The bundle is a
zip archive:

    manifest.json     format, version, bundle_id, run_name, threshold, mammoseg version,
                      members {name: {sha256, size}}, folds [{fold, member, source_sha256}]
    config.yaml       the run's resolved config
    contract.json     the preprocessing contract: windowing, padding, resize, image size,
                      input scale, each fold's normalisation, threshold
    card.json         the model card, machine-readable; MODEL_CARD.md the same for people
    postprocessing.json  the run's post-processing chosen on its out-of-fold predictions (when it has one)
    fold{k}/best.pt   fold k's best weights (mammoseg checkpoint format, weights only)

The bundle id is the run id of the run it was exported from (`inference.run_identity`): the
manifest records each fold's digest in the run (`source_sha256`), and reading checks that they
give the bundle id. The manifest is not signed: the digests catch a damaged or altered member,
not a whole bundle rewritten by someone else; compare the bundle id (or the file's SHA-256)
with its publisher's.

An unpacked bundle lives in `$XDG_CACHE_HOME/mammoseg/bundles/<bundle id>/<run name>/` (the
run's own name, so SEGs name the same run), with the manifest as `RunLayout.bundle_marker`; it is
checked against the manifest each time it is used and unpacked again when it differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammoseg.inference.run_identity import file_sha256, id_from_digests
from mammoseg.io import write_text_atomic
from mammoseg.layouts import RunLayout

BUNDLE_FORMAT = "mammoseg-bundle"
BUNDLE_VERSION = 1
BUNDLE_SUFFIX = ".mseg"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
CONTRACT = "contract.json"
CARD_JSON = "card.json"
CARD_MD = "MODEL_CARD.md"
#: The run's chosen post-processing (optional: bundles of runs without one, and older bundles, lack it).
POSTPROCESSING = RunLayout(".").postprocessing.name
#: Members a bundle may hold besides the manifest; anything else is refused.
MEMBER_NAME = re.compile(r"config\.yaml|contract\.json|card\.json|MODEL_CARD\.md|fold\d{1,3}/best\.pt|"
                         + re.escape(POSTPROCESSING))
REQUIRED_MEMBERS = (CONFIG, CONTRACT, CARD_JSON, CARD_MD)
#: A run name becomes a folder name in the cache: no separators, no leading dot.
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBER_BYTES = 2 * 2**30
_BLOCK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line naming the file and the reason."""


@dataclass(frozen=True)
class BundleManifest:
    """What a bundle's manifest.json says, checked for shape (not yet against the members)."""

    bundle_id: str
    run_name: str
    threshold: float
    members: dict[str, dict[str, Any]]
    folds: list[dict[str, Any]]
    data: dict[str, Any]

    def fold_members(self) -> list[str]:
        return [str(f["member"]) for f in self.folds]


def cache_root() -> Path:
    """Where bundles are unpacked: $XDG_CACHE_HOME/mammoseg/bundles (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mammoseg" / "bundles"


def is_bundle_file(path: str | os.PathLike) -> bool:
    """True for a regular file (a bundle or something claiming to be one): what `--run FILE` means."""
    return Path(path).is_file()


def parse_manifest(data: Any, path: Path) -> BundleManifest:
    """Check the manifest's shape; BundleError naming `path` for anything amiss."""
    def bad(reason: str) -> BundleError:
        return BundleError(f"{path}: not a usable mammoseg bundle: {reason}")

    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise bad(f"{MANIFEST} lacks the '{BUNDLE_FORMAT}' format marker")
    if data.get("version") != BUNDLE_VERSION:
        raise bad(f"bundle format version {data.get('version')!r}; this mammoseg reads version {BUNDLE_VERSION}")
    members, folds = data.get("members"), data.get("folds")
    if not isinstance(members, dict) or not isinstance(folds, list) or not folds:
        raise bad(f"{MANIFEST} lists no members or no folds")
    for name, entry in members.items():
        if not MEMBER_NAME.fullmatch(str(name)):
            raise bad(f"unexpected member name {name!r}")
        if not (isinstance(entry, dict) and _HEX64.fullmatch(str(entry.get("sha256", "")))
                and isinstance(entry.get("size"), int) and 0 <= entry["size"] <= MAX_MEMBER_BYTES):
            raise bad(f"{MANIFEST}: member {name!r} has no SHA-256 and size")
    missing = [m for m in REQUIRED_MEMBERS if m not in members]
    if missing:
        raise bad(f"missing member(s) {', '.join(missing)}")
    _check_folds(folds, members, bad)
    run_name, threshold = data.get("run_name"), data.get("threshold")
    if not isinstance(run_name, str) or not RUN_NAME.fullmatch(run_name):
        raise bad(f"run name {run_name!r} is not a plain folder name")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise bad(f"threshold {threshold!r} is not a number in [0, 1]")
    digests = [(f"fold{f['fold']}", bytes.fromhex(f["source_sha256"])) for f in folds]
    if data.get("bundle_id") != id_from_digests(digests):
        raise bad(f"bundle id {data.get('bundle_id')!r} does not match the folds' recorded run digests")
    return BundleManifest(str(data["bundle_id"]), run_name, float(threshold), members, folds, data)


def _check_folds(folds: list[Any], members: dict[str, Any], bad: Any) -> None:
    seen = []
    for entry in folds:
        if not isinstance(entry, dict) or isinstance(entry.get("fold"), bool) or not isinstance(entry.get("fold"), int):
            raise bad(f"{MANIFEST}: fold entry {entry!r} has no fold number")
        if entry.get("member") != f"fold{entry['fold']}/best.pt" or entry["member"] not in members:
            raise bad(f"{MANIFEST}: fold {entry['fold']} names member {entry.get('member')!r}, not one it holds")
        if not _HEX64.fullmatch(str(entry.get("source_sha256", ""))):
            raise bad(f"{MANIFEST}: fold {entry['fold']} has no run digest")
        seen.append(entry["fold"])
    if seen != sorted(set(seen)):
        raise bad(f"{MANIFEST}: folds {seen} are not in fold order, or repeat")
    extra = sorted(m for m in members if m.startswith("fold") and m not in {f["member"] for f in folds})
    if extra:
        raise bad(f"member(s) {', '.join(extra)} belong to no listed fold")


def _read_manifest(archive: zipfile.ZipFile, path: Path) -> BundleManifest:
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise BundleError(f"{path}: not a mammoseg bundle: no {MANIFEST} in the archive") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: {MANIFEST} is {info.file_size} bytes, more than a manifest can be")
    try:
        data = json.loads(archive.read(info).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: {MANIFEST} is not valid JSON ({' '.join(str(exc).split())[:200]})") from None
    return parse_manifest(data, path)


def _member_digest(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> str:
    """SHA-256 of one member, reading no more than its declared size (+1 byte to notice more)."""
    digest, read = hashlib.sha256(), 0
    with archive.open(info) as fh:
        while read <= size:
            block = fh.read(min(_BLOCK, size + 1 - read))
            if not block:
                break
            digest.update(block)
            read += len(block)
    return digest.hexdigest() if read == size else ""


def verify_bundle(path: str | os.PathLike) -> BundleManifest:
    """Check every member of the bundle at `path` against its manifest: names, sizes and SHA-256.

    Nothing in the bundle is loaded before this passes; a member that differs is refused in one
    line naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such bundle file")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = _read_manifest(archive, path)
            infos = archive.infolist()
            names = [i.filename for i in infos]
            if len(names) != len(set(names)):
                raise BundleError(f"{path}: the archive holds a member name twice; refused")
            unlisted = sorted(set(names) - set(manifest.members) - {MANIFEST})
            if unlisted:
                raise BundleError(f"{path}: member(s) {', '.join(unlisted)} not listed in {MANIFEST}; refused")
            for name, entry in manifest.members.items():
                _verify_member(archive, path, name, entry)
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{path}: not a mammoseg bundle: not a readable zip archive ({exc})") from None
    return manifest


def _verify_member(archive: zipfile.ZipFile, path: Path, name: str, entry: dict[str, Any]) -> None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise BundleError(f"{path}: member {name} is listed in {MANIFEST} but missing from the archive") from None
    if info.file_size != entry["size"]:
        raise BundleError(f"{path}: member {name} is {info.file_size} bytes, the manifest says {entry['size']}; "
                          "the bundle was altered or damaged")
    try:
        digest = _member_digest(archive, info, entry["size"])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a CRC error, a truncated file
        raise BundleError(f"{path}: member {name} cannot be read ({' '.join(str(exc).split())[:200]})") from None
    if digest != entry["sha256"]:
        raise BundleError(f"{path}: member {name} does not match its SHA-256 in {MANIFEST}; the bundle was altered "
                          "or damaged, refused")


def read_bundle_member(path: str | os.PathLike, name: str) -> bytes:
    """One small member (card.json, MODEL_CARD.md, contract.json) of a verified bundle."""
    manifest = verify_bundle(path)
    if name not in manifest.members or name.endswith(".pt"):
        raise BundleError(f"{path}: no member {name} to read")
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def unpack_bundle(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> tuple[Path, BundleManifest]:
    """Verify the bundle, then return its run folder in the cache (unpacking it when needed) and its manifest."""
    path = Path(path)
    manifest = verify_bundle(path)
    run_dir = Path(cache) if cache is not None else cache_root()
    run_dir = run_dir / manifest.bundle_id / manifest.run_name
    if _unpacked_matches(run_dir, manifest):
        return run_dir, manifest
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{manifest.run_name}.", suffix=".tmp", dir=run_dir.parent))
    try:
        _extract(path, manifest, tmp)
        if run_dir.exists():  # an earlier unpacking that no longer matches (this cache is mammoseg's own)
            shutil.rmtree(run_dir)
        try:
            os.rename(tmp, run_dir)
        except OSError:  # another process unpacked the same bundle at the same moment
            if not _unpacked_matches(run_dir, manifest):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return run_dir, manifest


def run_members(manifest: BundleManifest) -> tuple[str, ...]:
    """The members besides the folds that an unpacked run folder holds."""
    return (CONFIG, CONTRACT, *((POSTPROCESSING,) if POSTPROCESSING in manifest.members else ()))


def _extract(path: Path, manifest: BundleManifest, folder: Path) -> None:
    """Write the members a run folder needs into `folder`, each checked again as it is written."""
    with zipfile.ZipFile(path) as archive:
        for name in (*run_members(manifest), *manifest.fold_members()):
            target = folder / name  # the name was checked against MEMBER_NAME: no separators beyond foldK/
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with archive.open(name) as src, open(target, "wb") as dst:
                for block in iter(lambda: src.read(_BLOCK), b""):
                    digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != manifest.members[name]["sha256"]:
                raise BundleError(f"{path}: member {name} changed while it was being unpacked; refused")
    write_text_atomic(RunLayout(folder).bundle_marker, json.dumps(manifest.data, indent=2, sort_keys=True) + "\n")


def _unpacked_matches(run_dir: Path, manifest: BundleManifest) -> bool:
    """True when `run_dir` holds exactly this bundle's config and folds, byte for byte."""
    layout = RunLayout(run_dir)
    try:
        if json.loads(layout.bundle_marker.read_text(encoding="utf-8")) != manifest.data:
            return False
        names = [f"{f.dir.name}/best.pt" for f in layout.folds()]
        if names != manifest.fold_members():
            return False
        if (POSTPROCESSING in manifest.members) != layout.postprocessing.is_file():
            return False
        return all(file_sha256(run_dir / name).hex() == manifest.members[name]["sha256"]
                   for name in (*run_members(manifest), *names))
    except (OSError, ValueError):
        return False
