"""The one place per folder kind that knows its file names: prepared, run, prediction, evaluation.

Why: every stage reads what an earlier one wrote. When each folder kind is one object, renaming a
file is one edit here, and no module spells another stage's file names (docs/architecture.md).

A prepared folder (`mammoseg prepare`), `PreparedLayout`:

    DIR/images/<id>.png        uint16, windowed, padded to square and resized
    DIR/masks/<id>.png         uint8 0/255
    DIR/manifest.csv           one row per image (mammoseg.manifest)
    DIR/errors.csv             inputs that could not be used, with the reason

A run folder (`mammoseg train`), `RunLayout`:

    RUN/config.yaml            resolved experiment config
    RUN/folds.csv              id, patient_id, fold
    RUN/fold{k}/best.pt        best validation-loss checkpoint of fold k
    RUN/fold{k}/last.pt        state after the last finished epoch (resume)
    RUN/fold{k}/log.csv        one row per epoch
    RUN/fold{k}/learning_curve.png
    RUN/fold{k}/tensorboard/   optional
    RUN/postprocessing.json    threshold and component rules chosen on the out-of-fold predictions
    RUN/oof_dice.csv           each out-of-fold image's Dice before and after that post-processing
    RUN/holdout_pred/          fold-ensemble prediction of the holdout (reproduce, demo)
    RUN/eval/                  its evaluation
    RUN/reproduce.json         facts the report needs beside config.yaml
    RUN/view/                  the results browser of the holdout evaluation
    RUN/.mammoseg-bundle.json  the manifest of the bundle this folder was unpacked from (if it was)

A prediction folder (`mammoseg predict`), `PredictionLayout`:

    PRED/masks/<id>.png        uint8 0/255 on the input's grid
    PRED/prob/<id>.png         uint16 probability (--save-prob)
    PRED/overlays/<id>.png     the mask drawn on the image
    PRED/seg/<id>.dcm          DICOM Segmentation (--dicom-seg, DICOM inputs)
    PRED/predictions.csv       one row per predicted input; written last, it marks the folder finished
    PRED/errors.csv            inputs that could not be predicted, with the reason
    PRED/predict.json          settings and counts
    PRED/skipped.csv, stored.csv   (--dicomweb) instances not segmented; SEGs and SRs stored back

An evaluation folder (`mammoseg evaluate`), `EvaluationLayout`:

    EVAL/per_image.csv         one row per image: Dice, IoU, lesion counts
    EVAL/summary.json          means, spreads and counts (and the FROC's operating points)
    EVAL/froc.csv              the FROC curve: one row per probability threshold (with probability maps)
    EVAL/errors.csv            pairs that could not be scored
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_FOLD_DIR = re.compile(r"fold(\d+)")

MANIFEST_CSV = "manifest.csv"  # also the name `mammoseg synth` gives a manifest-format source's CSV
ERRORS_CSV = "errors.csv"


def _root(layout: object, root: str | os.PathLike) -> None:
    object.__setattr__(layout, "root", Path(root))


@dataclass(frozen=True)
class PreparedLayout:
    """Paths inside one prepared folder."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        _root(self, root)

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_CSV

    @property
    def errors(self) -> Path:
        return self.root / ERRORS_CSV

    def image(self, image_id: str) -> Path:
        return self.images / f"{image_id}.png"

    def mask(self, image_id: str) -> Path:
        return self.masks / f"{image_id}.png"

    @classmethod
    def outputs(cls) -> tuple[str, ...]:
        """The entries these paths name (what `prepare --overwrite` removes, with the journals)."""
        layout = cls(".")
        return (layout.images.name, layout.masks.name, MANIFEST_CSV, ERRORS_CSV)


@dataclass(frozen=True)
class PredictionLayout:
    """Paths inside one prediction folder."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        _root(self, root)

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def errors(self) -> Path:
        return self.root / ERRORS_CSV

    @property
    def summary(self) -> Path:
        return self.root / "predict.json"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.csv"

    @property
    def stored(self) -> Path:
        return self.root / "stored.csv"

    def mask(self, image_id: str) -> Path:
        return self.masks / f"{image_id}.png"

    def prob(self, image_id: str) -> Path:
        return self.root / "prob" / f"{image_id}.png"

    def overlay(self, image_id: str) -> Path:
        return self.root / "overlays" / f"{image_id}.png"

    def seg(self, image_id: str) -> Path:
        return self.root / "seg" / f"{image_id}.dcm"

    def sr(self, image_id: str) -> Path:
        return self.root / "sr" / f"{image_id}.dcm"

    @classmethod
    def outputs(cls) -> tuple[str, ...]:
        """The entries these paths name (what `predict --overwrite` removes, with the journals)."""
        layout = cls(".")
        return (layout.masks.name, layout.prob("x").parent.name, layout.overlay("x").parent.name,
                layout.seg("x").parent.name, layout.predictions.name, ERRORS_CSV, layout.summary.name,
                layout.skipped.name, layout.stored.name, layout.sr("x").parent.name)


@dataclass(frozen=True)
class EvaluationLayout:
    """Paths inside one evaluation folder."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        _root(self, root)

    @property
    def per_image(self) -> Path:
        return self.root / "per_image.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def errors(self) -> Path:
        return self.root / ERRORS_CSV

    @property
    def froc(self) -> Path:
        return self.root / "froc.csv"

    @classmethod
    def outputs(cls) -> tuple[str, ...]:
        """The entries an evaluation writes (what `evaluate --overwrite` removes)."""
        layout = cls(".")
        return (layout.per_image.name, layout.summary.name, ERRORS_CSV, layout.froc.name)


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
        _root(self, root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"

    @property
    def postprocessing(self) -> Path:
        return self.root / "postprocessing.json"

    @property
    def oof_dice(self) -> Path:
        return self.root / "oof_dice.csv"

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

    @property
    def bundle_marker(self) -> Path:
        return self.root / ".mammoseg-bundle.json"

    def owned_entries(self) -> tuple[str, ...]:
        """Every entry a run folder's commands write (names and glob patterns): what
        `train --overwrite` removes, the models and everything derived from them."""
        return (self.config.name, self.folds_csv.name, "fold[0-9]*", self.postprocessing.name, self.oof_dice.name,
                self.holdout_pred.name, self.eval.name, self.run_info.name, self.view.name)

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
