"""Output folders: who wrote them, never over an input, one run at a time, never through a link.

Every folder a mammoseg command writes carries `.mammoseg.json`, naming the command that
wrote it. `open_output_folder` is the one door every command goes through:

- it refuses an output folder that is, contains or lies inside an input or source folder
  (real paths compared), so a typo in `--out` cannot touch the data;
- a non-empty folder is used only if the same command wrote it: to continue it (when the
  command resumes) or, with `overwrite`, to delete that command's own entries — never
  anything else, and never a folder another command or a person wrote;
- an advisory lock (`.mammoseg.lock`, flock) makes a second concurrent run into the same
  folder fail at once, saying which process holds it;
- no write follows a symbolic link mammoseg did not create: the lock is opened with
  O_NOFOLLOW, and a linked entry among the command's own (a `masks/` replaced by a link to
  someone's folder) is refused, naming it, before anything is written;
- temp files a killed run left behind are removed, once the process that wrote them is gone
  (`mammoseg.io.is_stale_temp`), so a job running beside this one keeps its own.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mammoseg.io import open_no_follow, remove_stale_temps, write_text_atomic
from mammoseg.layouts import EvaluationLayout, PredictionLayout, RunLayout
from mammoseg.version import __version__

MARKER = ".mammoseg.json"
LOCK = ".mammoseg.lock"
#: Files by which folders written before the marker existed show their command.
LEGACY_EVIDENCE = {
    "prepare": ".prepare.json",
    "predict": PredictionLayout(".").summary.name,
    "train": RunLayout(".").config.name,
    "evaluate": EvaluationLayout(".").summary.name,
}


#: What to tell a user whose non-empty folder a command refuses, by command (default: `DEFAULT_HINT`).
DEFAULT_HINT = "pass --overwrite to replace it, or choose another --out"
HINTS = {
    "predict": "pass --resume to continue it, --overwrite to replace it, or choose another --out",
    "train": "pass --overwrite to replace it (this removes its models and predictions)",
}


@dataclass(frozen=True)
class LockRequest:
    """Which lock file of the folder a run takes (a shard or a fold takes its own, so they run side by
    side), and how long it keeps trying (for a step that takes a moment, e.g. opening a run folder)."""

    name: str = LOCK
    wait: float = 0.0


class FolderInUse(RuntimeError):
    """Another mammoseg run holds the folder's lock."""


def written_by(folder: Path) -> str | None:
    """The mammoseg command that wrote `folder`, from its marker (or a pre-marker state file)."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text(encoding="utf-8"))["command"])
        except (ValueError, KeyError, TypeError, OSError):
            return None
    for command, evidence in LEGACY_EVIDENCE.items():
        if (folder / evidence).is_file():
            return command
    return None


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def check_not_overlapping(out: Path, inputs: Iterable[str | os.PathLike], hosts: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output folder that is, contains or lies inside any input (file or folder).

    `hosts` are inputs the output may lie inside because their layout has a place for it
    (a run folder's `view/`); it still may not be or contain them."""
    target = _real(out)
    may_nest = {_real(h) for h in hosts}
    for raw in [*inputs, *hosts]:
        source = _real(raw)
        if target == source:
            relation = "is"
        elif source.is_relative_to(target):
            relation = "contains"
        elif target.is_relative_to(source) and not source.is_file() and source not in may_nest:
            relation = "lies inside"
        else:
            continue
        raise ValueError(f"{out}: the output folder {relation} the input {raw}; choose an --out outside your data "
                         "(mammoseg never writes into its inputs)")


def check_no_links(folder: Path, owned: Iterable[str]) -> None:
    """Refuse `folder` if one of the command's own entries in it (names or glob patterns) is a symbolic
    link, or the lock file or marker is: writing there would write into whatever the link points to."""
    if not folder.is_dir():
        return
    patterns = (*owned, MARKER, ".mammoseg*.lock")
    for name in sorted(os.listdir(folder)):
        entry = folder / name
        if entry.is_symlink() and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            raise FileExistsError(f"{entry}: is a symbolic link; mammoseg never writes through a link it did not "
                                  "create: remove the link, or choose another --out")


def remove_entries(folder: Path, names: Iterable[str]) -> None:
    """Delete the named files and folders (glob patterns allowed) inside `folder`, nothing else."""
    for pattern in names:
        matches = [folder / n for n in os.listdir(folder) if fnmatch.fnmatchcase(n, pattern)] if folder.is_dir() else []
        for target in matches:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)


class FolderLock:
    """An exclusive, non-blocking flock on `folder/name`, held until `release` (or process exit).

    The lock file says who holds it, and is removed on release, so a finished run leaves
    nothing behind (a killed one leaves it unlocked: the next run takes it over).
    """

    def __init__(self, folder: Path, name: str = LOCK, wait: float = 0.0, what: str = "") -> None:
        """`wait`: seconds to keep trying (for a step that takes a moment, e.g. opening a run folder);
        `what`: what the lock guards, for the message (default: the folder)."""
        self.path = folder / name
        deadline = time.monotonic() + wait
        while True:
            self.fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(self.fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(self.fd)
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise FolderInUse(f"{what or folder}: in use by another mammoseg run ({holder}); wait for it to "
                                  "finish, or use another output folder") from None
            try:
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    break  # the file is still the one at the path: the lock is ours
            except FileNotFoundError:
                pass
            os.close(self.fd)  # the holder removed it while we waited: lock the new one
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            self.path.unlink(missing_ok=True)  # while still locked, so nobody locks a file about to vanish
            os.close(self.fd)
            self.fd = -1


class OutputFolder:
    """An output folder opened by `open_output_folder`: its path, whether an earlier run of the
    same command is continued, and the lock (released by `close` or leaving a `with` block)."""

    def __init__(self, path: Path, command: str, continued: bool, lock: FolderLock | None) -> None:
        self.path, self.command, self.continued, self.lock = path, command, continued, lock

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_bookkeeping(name: str) -> bool:
    """The marker and lock files, which do not make a folder 'occupied'."""
    return name == MARKER or (name.startswith(".mammoseg") and name.endswith(".lock"))


def _write_marker(out: Path, command: str) -> None:
    """Create the marker; shards starting together into a new folder create it once (O_EXCL)."""
    text = json.dumps({"command": command, "mammoseg": __version__}) + "\n"
    if (out / MARKER).exists():  # another command's marker on an empty folder: replace it
        write_text_atomic(out / MARKER, text)
        return
    try:
        fd = os.open(out / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return  # a shard beside this one just wrote it
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _refusal(out: Path, command: str, owner: str | None, hint: str) -> FileExistsError:
    if owner is None:
        return FileExistsError(f"{out}: is not empty and was not written by `mammoseg {command}`; choose another "
                               "--out (mammoseg never deletes or overwrites what it did not write)")
    if owner != command:
        return FileExistsError(f"{out}: was written by `mammoseg {owner}`, not `mammoseg {command}`; choose another --out")
    return FileExistsError(f"{out}: holds an earlier `mammoseg {command}` output; {hint}")


def open_output_folder(
    out: str | os.PathLike,
    command: str,
    *,
    inputs: Sequence[str | os.PathLike] = (),
    hosts: Sequence[str | os.PathLike] = (),
    owned: Iterable[str] = (),
    overwrite: bool = False,
    resume: bool = False,
    lock: LockRequest = LockRequest(),
) -> OutputFolder:
    """Make `out` ready for `command` (see the module docstring); the caller closes it when done.

    `owned`: the entries (names or glob patterns) `overwrite` deletes, none of which may be a link.
    `lock`: the lock file taken. `hosts`: inputs `out` may lie inside (see `check_not_overlapping`).
    `resume`: a folder the same command wrote is continued rather than refused.
    """
    out = Path(out)
    owned = tuple(owned)
    check_not_overlapping(out, inputs, hosts)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    owner = written_by(out) if out.is_dir() else None
    occupied = out.is_dir() and any(not _is_bookkeeping(entry.name) for entry in out.iterdir())
    if occupied and (owner != command or not (overwrite or resume)):
        raise _refusal(out, command, owner, HINTS.get(command, DEFAULT_HINT))
    check_no_links(out, owned)
    out.mkdir(parents=True, exist_ok=True)
    folder_lock = FolderLock(out, lock.name, wait=lock.wait)
    try:
        if owner == command and overwrite:
            remove_entries(out, owned)
        if owner != command or not (out / MARKER).is_file():  # new, another's empty folder, or pre-marker
            _write_marker(out, command)
        remove_stale_temps(out)
    except BaseException:
        folder_lock.release()
        raise
    return OutputFolder(out, command, occupied and owner == command and not overwrite, folder_lock)
