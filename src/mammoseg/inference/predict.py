"""Fold-ensemble prediction: a trained run's fold models → masks for prepared images or DICOMs.

Drives the units of `mammoseg.inference`: `inputs` (what to predict, streamed), `ensemble`
(the mean of the fold models' probabilities), `outputs` (the per-image files) and `journal`
(the folder's settings, per-input journal and final CSVs). Broken inputs are listed in
errors.csv and the rest go on. `resume` skips inputs a killed or finished run already
predicted; `part` predicts one shard (`--parts N --part I`) into a folder shared with the
other shards, which `merge_predictions` completes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mammoseg.dicom.seg import SegIdentity, require_highdicom
from mammoseg.distributed import resolve_device
from mammoseg.folders import LockRequest, OutputFolder, open_output_folder
from mammoseg.inference.ensemble import Ensemble, batch_probability, load_ensemble
from mammoseg.inference.inputs import (
    InputError,
    InputItem,
    LoadedItem,
    crop_mismatch,
    is_dicom_file,
    is_prepared_folder,
    iter_inputs,
    prefetched,
)
from mammoseg.inference.journal import (
    Done,
    PredictionJournal,
    finished_shards,
    journal_path,
    read_done,
    read_state,
    write_results,
    write_state,
)
from mammoseg.inference.outputs import OUTPUT_ENTRIES, write_outputs
from mammoseg.inference.postprocess import PostProcessing, run_postprocessing
from mammoseg.inference.run_identity import run_id, run_identity
from mammoseg.layouts import RunLayout
from mammoseg.shards import Part

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictOptions:
    """How to predict: what decides the masks besides the models (recorded, so a resumed run keeps
    them), and how to run (batch size, device, progress bar: speed and display only)."""

    #: None: the run's chosen threshold (postprocessing.json), else 0.5; a number overrides it.
    threshold: float | None = None
    tta: bool = False
    save_prob: bool = False
    dicom_seg: bool = False
    dicom_sr: bool = False
    split: str | None = None
    seg_identity: SegIdentity | None = None
    batch_size: int = 4
    device: str | None = None
    progress: bool = True
    #: the folds whose models are averaged (--folds); None: every trained fold of the run.
    folds: tuple[int, ...] | None = None
    #: False (--no-postprocessing): the thresholded mask with every component, whatever the run chose.
    postprocessing: bool = True
    #: The rule in force, resolved from the above and the run by `resolve_postprocessing`.
    rule: PostProcessing | None = None

    def check(self, inputs: Sequence[Any]) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not inputs:
            raise ValueError("no inputs given")
        if self.dicom_seg or self.dicom_sr:
            require_highdicom()

    def recorded(self) -> dict[str, Any]:
        """What a resumed run must keep (batch size, device and progress change speed and display only;
        a fold subset is recorded when one was chosen)."""
        skipped = ("batch_size", "device", "progress", "postprocessing", "rule",
                   *(("folds",) if self.folds is None else ()))
        recorded = {k: v for k, v in asdict(self).items() if k not in skipped}
        if self.folds is not None:
            recorded["folds"] = list(self.folds)  # as JSON reads it back
        if self.rule is not None and self.rule.filters_components:  # the threshold alone is `threshold`
            recorded["postprocessing"] = self.rule.components()
        return recorded


#: How many skipped inputs are named on the console (all of them are in errors.csv).
SHOWN_ERRORS = 10


def check_usable(inputs: Sequence[str | os.PathLike], split: str | None) -> None:
    """Refuse, before anything is written, a command line none of whose inputs can be predicted (missing,
    empty, not a DICOM file); once one input is usable the others go to errors.csv as the run meets them."""
    reasons = []
    for raw in inputs:
        reason = _unusable(raw, split)
        if reason is None:
            return
        reasons.append(f"{raw}: {reason}")
    raise ValueError(f"{'; '.join(reasons)} (nothing to predict)")


def _unusable(raw: str | os.PathLike, split: str | None) -> str | None:
    """Why one command-line input holds nothing to predict, or None once it yields a usable item."""
    first_error = None
    for entry in iter_inputs([raw], split):
        if isinstance(entry, InputError):
            first_error = first_error or entry.reason
        elif entry.kind != "dicom" or is_dicom_file(Path(entry.input)):
            return None
        else:
            first_error = first_error or "not a DICOM file (no .dcm suffix and no DICM marker)"
    if first_error:
        return first_error
    return f"no images of split {split!r}" if split not in (None, "all") else "no images"


def _count_todo(inputs: Sequence[str | os.PathLike], split: str | None, part: Part, done: Done,
                out: Path) -> int | None:
    """How many items this run will predict, when that is cheap to know (prepared folders are a manifest,
    files are one item each); None when a DICOM folder must be walked (those are streamed)."""
    if any(Path(raw).is_dir() and not is_prepared_folder(Path(raw)) for raw in inputs):
        return None
    return sum(1 for entry in iter_inputs(inputs, split)
               if isinstance(entry, InputItem) and part.owns(entry.key) and not done.finished(entry, out))


@contextlib.contextmanager
def all_cores(device: torch.device) -> Iterator[None]:
    """On CPU, let torch use every core while predicting (the caller's setting is restored)."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_postprocessing(run_dir: str | os.PathLike, options: PredictOptions, known_run_id: str) -> PredictOptions:
    """The options with the rule in force (`options.rule`) and its threshold: the run's chosen post-processing
    (postprocessing.json, checked to belong to the run's fold models `known_run_id`), else the default (0.5,
    every component); a given `threshold` replaces the chosen one only; `postprocessing=False` keeps the
    threshold alone. Already resolved options keep their rule (a threshold set since replaces its threshold)."""
    if options.rule is not None:
        rule = options.rule if options.threshold is None else replace(options.rule, threshold=float(options.threshold))
        return replace(options, threshold=rule.threshold, rule=rule)
    chosen = run_postprocessing(RunLayout(run_dir), known_run_id) if options.postprocessing else None
    rule = chosen or PostProcessing()
    if not options.postprocessing:
        rule = PostProcessing(rule.threshold)
    if options.threshold is not None:
        rule = replace(rule, threshold=float(options.threshold))
    return replace(options, threshold=rule.threshold, rule=rule)


def with_identity(run_dir: str | os.PathLike, options: PredictOptions) -> tuple[PredictOptions, str]:
    """The options with the post-processing in force (`resolve_postprocessing`) and the SEG identity every
    DICOM SEG (and SR) records, and the run id.

    The run id hashes every checkpoint: a given SEG identity already holds it, else it is computed
    here, once per run. A local `--dicom-seg` thus records the same run id and threshold as a SEG
    stored over DICOMweb (docs/dicom.md); a threshold of exactly 0 or 1 cannot be an identity
    (`SegIdentity`), and such SEGs say only "mammoseg".
    """
    if options.dicom_sr and not options.dicom_seg:  # the SR references the SEG's segment: both are written
        options = replace(options, dicom_seg=True)
    if options.seg_identity is not None:
        return resolve_postprocessing(run_dir, options, options.seg_identity.run_id), options.seg_identity.run_id
    known = run_id(run_dir)
    options = resolve_postprocessing(run_dir, options, known)
    if options.dicom_seg and 0.0 < options.threshold < 1.0:
        options = replace(options, seg_identity=run_identity(run_dir, options.threshold, known_run_id=known))
    return options, known


def _settings(run_dir: str | os.PathLike, ensemble: Ensemble, inputs: Sequence[Any], options: PredictOptions,
              known_run_id: str) -> dict:
    settings = {"run": os.path.abspath(run_dir), "run_id": known_run_id,
                "checkpoints": ensemble.checkpoints, "image_size": ensemble.image_size,
                "inputs": [os.path.abspath(i) for i in inputs], **options.recorded()}
    if ensemble.breast_crop:  # recorded only when on: a folder predicted before the crop resumes unchanged
        settings["breast_crop"] = True
    return settings


def _open(out: Path, settings: dict, inputs: Sequence[Any], overwrite: bool, resume: bool, part: Part) -> OutputFolder:
    """Open (and lock) the prediction folder for this part; a resumed part must keep its settings."""
    folder = open_output_folder(out, "predict", inputs=inputs, owned=OUTPUT_ENTRIES, overwrite=overwrite,
                                resume=resume or not part.whole, lock=LockRequest(part.lock_name))
    state = read_state(out, part) if folder.continued else None
    if state is not None and resume and state.get("settings") != settings:
        folder.close()
        changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
        raise FileExistsError(f"{out}: was predicted with other settings ({', '.join(changed)}); --resume needs the "
                              "same ones (or pass --overwrite, or choose another --out)")
    if state is None or not resume:
        write_state(out, part, settings, finished=False)
        journal_path(out, part).unlink(missing_ok=True)
    return folder


def _todo(stream: Iterable[InputItem | InputError], part: Part, done: Done, out: Path,
          journal: PredictionJournal, dicom_seg: bool) -> Iterator[InputItem]:
    """This part's inputs still to predict; their collection errors go to the journal."""
    warned = False
    for entry in stream:
        if isinstance(entry, InputError):
            if part.owns(f"error:{entry.input}"):
                journal.add_error(entry)
        elif part.owns(entry.key) and not done.finished(entry, out):
            if dicom_seg and entry.kind != "dicom" and not warned:
                log.warning("--dicom-seg: DICOM Segmentations are written for DICOM inputs only, not prepared "
                            "or PNG/TIFF images")
                warned = True
            yield entry


def _predict_batch(ensemble: Ensemble, loaded: Sequence[LoadedItem], device: torch.device, options: PredictOptions,
                   out: Path, journal: PredictionJournal) -> None:
    probs = batch_probability(ensemble.members, [li.model_input for li in loaded], device, tta=options.tta)
    for li, prob in zip(loaded, probs):
        try:
            row = write_outputs(li, prob, out, options.rule or PostProcessing(options.threshold), options.save_prob,
                                options.dicom_seg, options.seg_identity, dicom_sr=options.dicom_sr)
            journal.add_row(li.item, row)
        except Exception as exc:  # e.g. an unwritable SEG for an odd header
            journal.add_error(InputError(li.item.input, f"{type(exc).__name__}: {exc}", li.item.seq, li.item.key))


def predict(
    run_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: PredictOptions = PredictOptions(),
    *,
    overwrite: bool = False,
    resume: bool = False,
    part: Part = Part(),
) -> dict[str, Any]:
    """Predict masks for prepared folders and/or DICOM files with a run's fold ensemble.

    Writes the prediction folder of docs/architecture.md; returns its summary (`n_predicted`,
    `n_errors`, `out_dir`, `checkpoints`, ...; a shard's: its own part). The folder must be new
    or empty unless `overwrite` or `resume`. `options.seg_identity` (run and threshold) is
    recorded in each DICOM SEG, so `--store` can find it again.
    """
    options.check(inputs)
    if overwrite and not part.whole:
        raise ValueError("--overwrite cannot be combined with --parts: a shard must not delete the other shards' "
                         "work; predict into a new folder instead")
    out, dev = Path(out_dir), resolve_device(options.device)
    ensemble = load_ensemble(run_dir, dev, options.folds)
    check_usable(inputs, options.split)
    for raw in inputs:
        mismatch = crop_mismatch(Path(raw), ensemble.breast_crop)
        if mismatch:
            log.warning("%s", mismatch)
    options, known_run_id = with_identity(run_dir, options)
    settings = _settings(run_dir, ensemble, inputs, options, known_run_id)
    with _open(out, settings, inputs, overwrite, resume, part), PredictionJournal(out, part) as journal, \
            all_cores(dev), torch.inference_mode():
        done = read_done(out) if resume else Done()
        total = _count_todo(inputs, options.split, part, done, out) if options.progress else None
        bar = tqdm(desc="predict", unit="img", total=total, disable=not options.progress)
        todo = _todo(iter_inputs(inputs, options.split), part, done, out, journal, options.dicom_seg)
        for loaded, load_errors, n in prefetched(todo, ensemble.image_size, options.batch_size,
                                                   want_dataset=options.dicom_seg, crop=ensemble.breast_crop):
            for error in load_errors:
                journal.add_error(error)
            if loaded:
                _predict_batch(ensemble, loaded, dev, options, out, journal)
            bar.update(n)
        bar.close()
        write_state(out, part, settings, finished=True)
        summary = {**settings, "part": str(part)}
        summary = write_results(out, summary) if part.whole else _shard_summary(out, summary, part)
    _log_skipped([entry["error"] for entry in read_done(out, part).errors.values()], out)
    return summary


def _log_skipped(errors: Sequence[dict[str, Any]], out: Path) -> None:
    """One line per skipped input (the first few; errors.csv lists them all)."""
    for error in errors[:SHOWN_ERRORS]:
        log.warning("skipped %s: %s", error["input"], error["reason"])
    if len(errors) > SHOWN_ERRORS:
        log.warning("... and %d more skipped input(s): see %s", len(errors) - SHOWN_ERRORS, out / "errors.csv")


def _shard_summary(out: Path, summary: dict[str, Any], part: Part) -> dict[str, Any]:
    done = read_done(out, part)
    return {**summary, "n_predicted": len(done.rows), "n_errors": len(done.errors), "out_dir": str(out)}


def merge_predictions(out_dir: str | os.PathLike) -> dict[str, Any]:
    """predictions.csv, errors.csv and predict.json of a sharded predict once every part finished
    (in input order: the same files a one-machine run writes)."""
    out = Path(out_dir)
    settings, count = finished_shards(out)
    with open_output_folder(out, "predict", owned=OUTPUT_ENTRIES, resume=True):
        return write_results(out, {**settings, "part": f"{count} parts, merged"})
