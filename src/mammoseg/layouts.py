"""The one place that knows a run folder's file names (DESIGN.md §5, docs/architecture.md).

    RUN/config.yaml            resolved experiment config
    RUN/folds.csv              id, patient_id, fold
    RUN/fold{k}/best.pt        best validation-loss checkpoint of fold k
    RUN/fold{k}/last.pt        state after the last finished epoch (resume)
    RUN/fold{k}/log.csv        one row per epoch
    RUN/fold{k}/learning_curve.png
    RUN/fold{k}/tensorboard/   optional
    RUN/holdout_pred/          fold-ensemble prediction of the holdout (reproduce, demo)
    RUN/eval/                  its evaluation
    RUN/reproduce.json         facts the report needs beside config.yaml
    RUN/view/                  the results browser of the holdout evaluation

train, predict, report, reproduce and export all go through `RunLayout`, so renaming a file
is one edit here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_FOLD_DIR = re.compile(r"fold(\d+)")


@dataclass(frozen=True)
class FoldFiles:
    """The files of one fold of a run."""

    fold: int
    dir: Path

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def log(self) -> Path:
        return self.dir / "log.csv"

    @property
    def curve(self) -> Path:
        return self.dir / "learning_curve.png"

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"

    @property
    def holdout_pred(self) -> Path:
        return self.root / "holdout_pred"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def run_info(self) -> Path:
        return self.root / "reproduce.json"

    @property
    def view(self) -> Path:
        return self.root / "view"

    def owned_entries(self) -> tuple[str, ...]:
        """Every entry a run folder's commands write (names and glob patterns): what
        `train --overwrite` removes, the models and everything derived from them."""
        return (self.config.name, self.folds_csv.name, "fold[0-9]*", self.holdout_pred.name, self.eval.name,
                self.run_info.name, self.view.name)

    def fold(self, k: int) -> FoldFiles:
        return FoldFiles(int(k), self.root / f"fold{int(k)}")

    def folds(self) -> list[FoldFiles]:
        """The fold folders that exist (`fold0`, `fold1`, ...), in fold order."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            match = _FOLD_DIR.fullmatch(entry.name)
            if match and entry.is_dir():
                found.append(FoldFiles(int(match.group(1)), entry))
        return sorted(found, key=lambda f: f.fold)

    def best_checkpoints(self) -> list[Path]:
        """Every fold's `best.pt` that exists, in fold order."""
        return [f.best for f in self.folds() if f.best.is_file()]

    def fold_logs(self) -> list[FoldFiles]:
        """The folds with a `log.csv`, in fold order."""
        return [f for f in self.folds() if f.log.is_file()]
