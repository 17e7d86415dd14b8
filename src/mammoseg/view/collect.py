"""What `mammoseg view` shows: the input folder's kind, the folders it points to, one `Case` per image.

The input is one of three folders (docs/architecture.md):

- a **run** (``config.yaml``): its ``holdout_pred/`` and ``eval/``, found with `RunLayout`;
  the prepared folder from the evaluation or the run's ``reproduce.json`` (via `load_run`);
- an **evaluation** (``per_image.csv``): ``summary.json`` names the prediction folder and
  either the prepared folder (``data_dir``) or the reference masks (``ref_dir``);
- a **prediction** (``masks/``, usually with ``predictions.csv``): the prepared folder is
  ``--data``, or the one ``predict.json`` records among the inputs predict read (never a
  guess from file paths: a source folder of DICOMs can look like a prepared one). DICOM
  inputs need none: their header names the patient, view, side and pixel spacing.

An evaluation, when there is one, decides the list of images and their Dice/IoU; without
one every prediction is listed and the scores are computed from the masks (`render`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammoseg.evaluation.runs import RunInfo, load_run
from mammoseg.evaluation.scoring import mask_files
from mammoseg.geometry import PLAN_FIELDS, PadResize
from mammoseg.inference.journal import prepared_inputs
from mammoseg.io import read_csv
from mammoseg.layouts import EvaluationLayout, PredictionLayout, PreparedLayout, RunLayout
from mammoseg.manifest import load_manifest

IMAGE_SUFFIXES = (".png", ".dcm", ".dicom", ".dic")
#: Manifest columns that map a mask between the original and the prepared grid (every manifest has
#: them; a cropped folder's crop columns are read by `PadResize.from_row` too).
PLAN_COLUMNS = PLAN_FIELDS


@dataclass
class ViewInput:
    """The folders behind one view; `summary` is the evaluation's summary.json when there is one."""

    kind: str  # "run", "evaluation" or "prediction"
    root: Path
    pred_dir: Path
    eval_dir: Path | None = None
    data_dir: Path | None = None
    ref_dir: Path | None = None
    summary: dict[str, Any] | None = None
    run: RunInfo | None = None

    def folders(self) -> list[Path]:
        """Every folder the view reads: the output may not be one of them or hold one."""
        found = [self.root, self.pred_dir, self.eval_dir, self.data_dir, self.ref_dir]
        return [p for p in found if p is not None]


@dataclass
class Case:
    """One image: where its files are and what the evaluation (if any) says about it."""

    id: str
    patient: str = ""
    view: str = ""
    laterality: str = ""
    study_date: str = ""  # YYYY-MM-DD, from a DICOM image's header
    image: Path | None = None
    ref: Path | None = None
    pred: Path | None = None
    prob: Path | None = None
    plan: PadResize | None = None
    spacing: tuple[float, float] | None = None  # (row, column) mm of the original image's pixels, when known
    scores: dict[str, Any] = field(default_factory=dict)  # per_image.csv values, parsed


def _existing_dir(value: Any, where: str, what: str) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"{where}: names the {what} {path}, which is not a folder; give it with --data")
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None


def recorded_data_dir(pred_dir: Path) -> Path | None:
    """The prepared folder predict read, as its predict.json records it (None: it read none).

    `data_dirs` is written by predict; an older predict.json has only `inputs`, among which the
    prepared folders are recognised by their manifest's columns. Without any record, and with
    prepared images among the inputs, view cannot know the folder and asks for --data.
    """
    layout = PredictionLayout(pred_dir)
    summary = _read_json(layout.summary)
    if summary is None or not ("data_dirs" in summary or "inputs" in summary):
        if any(Path(p).suffix.lower() == ".png" for p in _prediction_inputs(pred_dir).values()):
            raise FileNotFoundError(f"{pred_dir}: no {layout.summary.name} says which prepared folder predict read; "
                                    "give it with --data")
        return None
    found = summary["data_dirs"] if "data_dirs" in summary else prepared_inputs(summary.get("inputs") or ())
    if len(found) > 1:
        folders = ", ".join(map(str, found))
        raise ValueError(f"{layout.summary}: predict read {len(found)} prepared folders ({folders}); "
                         "give the one to show with --data")
    return _existing_dir(found[0], str(layout.summary), "prepared folder") if found else None


def resolve_input(source: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> ViewInput:
    """Recognise a run, evaluation or prediction folder and find the folders it points to."""
    root = Path(source)
    data = Path(data_dir) if data_dir is not None else None
    if data is not None and not PreparedLayout(data).manifest.is_file():
        raise FileNotFoundError(f"{data}: no {PreparedLayout(data).manifest.name}; --data must be a folder made by `mammoseg prepare`")
    if RunLayout(root).config.is_file():
        info = load_run(root, data_dir=data)
        layout = RunLayout(root)
        if not PredictionLayout(layout.holdout_pred).masks.is_dir():
            raise FileNotFoundError(f"{layout.holdout_pred}: no masks/; predict the run's holdout first "
                                    "(`mammoseg reproduce` does), or view a prediction folder")
        summary = info.summary
        return ViewInput("run", root, layout.holdout_pred, info.eval_dir, info.data_dir,
                         _existing_dir((summary or {}).get("ref_dir"), str(layout.eval), "reference folder"),
                         summary, info)
    if EvaluationLayout(root).per_image.is_file():
        summary = _read_json(EvaluationLayout(root).summary) or {}
        where = str(EvaluationLayout(root).summary)
        pred = _existing_dir(summary.get("pred_dir"), where, "prediction folder")
        if pred is None:
            raise FileNotFoundError(f"{where}: missing, or names no prediction folder (pred_dir)")
        return ViewInput("evaluation", root, pred, root,
                         data or _existing_dir(summary.get("data_dir"), where, "prepared folder"),
                         _existing_dir(summary.get("ref_dir"), where, "reference folder"), summary or None)
    if PredictionLayout(root).masks.is_dir():
        return ViewInput("prediction", root, root, data_dir=data or recorded_data_dir(root))
    raise FileNotFoundError(
        f"{root}: not a prediction, evaluation or run folder "
        "(expected masks/ and predictions.csv, per_image.csv, or config.yaml)"
    )


def _case_ids(inp: ViewInput) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The images to list, in order, and the evaluation's rows by id (empty without one)."""
    if inp.eval_dir is not None and EvaluationLayout(inp.eval_dir).per_image.is_file():
        rows = read_csv(EvaluationLayout(inp.eval_dir).per_image)
        return [r["id"] for r in rows], {r["id"]: r for r in rows}
    predictions = PredictionLayout(inp.pred_dir).predictions
    if predictions.is_file():
        return [r["id"] for r in read_csv(predictions)], {}
    return sorted(mask_files(inp.pred_dir, "predicted")), {}


def _parse_scores(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("dice", "iou"):
        if row.get(key) not in (None, ""):
            out[key] = float(row[key])
    for key in ("ref_empty", "pred_empty", "n_ref_lesions", "n_detected", "n_false_positives"):
        if row.get(key) not in (None, ""):
            out[key] = int(float(row[key]))
    return out


def _prediction_inputs(pred_dir: Path) -> dict[str, Path]:
    """predict's input per id, when it is an image file view can show (a PNG or a DICOM file)."""
    predictions = PredictionLayout(pred_dir).predictions
    if not predictions.is_file():
        return {}
    found = {}
    for row in read_csv(predictions):
        path = Path(row.get("input", ""))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found[row["id"]] = path
    return found


def parse_spacing(text: str | None) -> tuple[float, float] | None:
    """The manifest's `pixel_spacing` ("row\\col" in mm) as numbers; None when empty or unusable."""
    parts = str(text or "").split("\\")
    try:
        row, col = (float(v) for v in parts)
    except ValueError:
        return None
    return (row, col) if row > 0 and col > 0 and math.isfinite(row * col) else None


def collect_cases(inp: ViewInput) -> list[Case]:
    """One `Case` per image listed by the evaluation (or the prediction folder), in its order."""
    ids, scored = _case_ids(inp)
    manifest = {r["id"]: r for r in load_manifest(inp.data_dir)} if inp.data_dir is not None else {}
    refs = mask_files(inp.ref_dir, "reference") if inp.ref_dir is not None else {}
    preds = mask_files(inp.pred_dir, "predicted")
    inputs = _prediction_inputs(inp.pred_dir)
    cases = []
    for image_id in ids:
        row = manifest.get(image_id)
        case = Case(image_id, scores=_parse_scores(scored.get(image_id, {})))
        case.pred = preds.get(image_id)
        prob = PredictionLayout(inp.pred_dir).prob(image_id)
        case.prob = prob if prob.is_file() else None
        case.image = inputs.get(image_id)
        case.ref = refs.get(image_id)
        if row is not None:
            case.patient, case.view, case.laterality = row["patient_id"], row["view"], row["laterality"]
            case.image = inp.data_dir / row["image"]
            if row.get("mask"):
                case.ref = inp.data_dir / row["mask"]
            if all(row.get(c, "") != "" for c in PLAN_COLUMNS):
                case.plan = PadResize.from_row(row)
            case.spacing = parse_spacing(row.get("pixel_spacing", ""))
        elif image_id in scored and scored[image_id].get("patient_id"):
            case.patient = scored[image_id]["patient_id"]
        cases.append(case)
    return cases
