"""Shards: the convention of `--parts N --part I` (nnU-Net's `-num_parts/-part_id`).

Shard I of N takes the inputs whose stable key hashes to I modulo N. The key is the input's
path as the user named it (relative to the source or input folder where there is one), so
every machine of a cluster — whatever it mounts the data as — splits the same way, and a
rerun of one shard redoes exactly its own inputs. Shards write only their own files into the
shared output folder (outputs named by image id, a journal and a lock per shard); a merge
step builds the folder-wide files once every shard has finished.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Part:
    """Shard `index` of `count` (0 of 1: the whole job, one machine)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"--parts {self.count}: must be at least 1")
        if not 0 <= self.index < self.count:
            raise ValueError(f"--part {self.index}: must be in 0..{self.count - 1} for --parts {self.count}")

    @property
    def whole(self) -> bool:
        return self.count == 1

    @property
    def suffix(self) -> str:
        """What this shard's own file names carry: '' for a whole run, '.part-I-of-N' for a shard."""
        return "" if self.whole else f".part-{self.index}-of-{self.count}"

    @property
    def lock_name(self) -> str:
        return f".mammoseg{self.suffix}.lock"

    def owns(self, key: str) -> bool:
        """Whether this shard takes the input with stable key `key`."""
        return self.whole or shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return "the whole job" if self.whole else f"part {self.index} of {self.count}"


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of a key: SHA-256, so it is the same in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def stable_key(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """The key of an input file: its path relative to `root` when it lies inside, else as given."""
    path = Path(path)
    if root is not None:
        root_path = Path(root)
        if root_path.is_file():
            root_path = root_path.parent
        try:
            return path.resolve().relative_to(root_path.resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def parse_part(parts: int | None, part: int | None) -> Part:
    """`--parts N --part I` from the command line: both or neither."""
    if parts is None and part is None:
        return Part()
    if parts is None or part is None:
        raise ValueError("--parts and --part go together, e.g. --parts 8 --part $SLURM_ARRAY_TASK_ID")
    return Part(part, parts)


def add_shard_arguments(parser: argparse.ArgumentParser, verb: str, merged_files: str) -> None:
    """`--parts N --part I` and `--merge`, as `prepare` and `predict` take them."""
    parser.add_argument("--parts", type=int, default=None, metavar="N", help="split the inputs into N shards ...")
    parser.add_argument("--part", type=int, default=None, metavar="I", help=f"... and {verb} shard I (0..N-1)")
    parser.add_argument("--merge", action="store_true",
                        help=f"after every --parts shard finished: write {merged_files} of --out")
