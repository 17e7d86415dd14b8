"""A model card generated from a run folder: `card.json` for machines, `MODEL_CARD.md` for people.

Why generated: a card written by hand drifts from the model it describes. Everything here is
read from the run — config.yaml, the fold checkpoints, folds.csv (counts only: no patient
identifier leaves the run), the fold logs, the holdout evaluation when there is one, and the
prepared manifest when it can be found — and what the run does not record is said to be
unknown rather than guessed.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mammoseg.evaluation.runs import RANDOM_INIT, load_run
from mammoseg.io import read_csv
from mammoseg.layouts import PreparedLayout, RunLayout
from mammoseg.models import display_name

CARD_VERSION = 1
INTENDED_USE = ("Research on breast mass segmentation in mammograms. Not a medical device: not for clinical "
                "diagnosis, screening or treatment decisions.")
LIMITATIONS = (
    "Trained and validated only on the data summarised here; performance on other vendors, sites, "
    "populations, views or image processing is unknown.",
    "Segments masses only (not calcifications, distortions or asymmetries) and never says whether a "
    "mass is malignant.",
    "Inputs must be prepared by the preprocessing contract above (windowed For Presentation "
    "mammograms, padded away from the chest wall, area-resized); other inputs give unreliable masks.",
    "Cross-validation Dice is measured on each fold's own validation patients, which also chose the "
    "saved epoch: it is optimistic. Only holdout metrics, where given, are unbiased estimates.",
)
#: The licence that comes with each kind of initial weights (weights_label's names).
WEIGHT_LICENCES = {
    "GMIC": "AGPL-3.0: the encoder was initialised from GMIC weights (nyukat/GMIC), released under the GNU "
            "Affero GPL v3; weights derived from them carry that licence.",
    "ImageNet": "torchvision ResNet34 ImageNet weights: torchvision's code is BSD-3-Clause; the weights were "
                "trained on ImageNet, whose terms allow non-commercial research and educational use only.",
    RANDOM_INIT: "none: random initialisation, no third-party weights.",
}


def weights_licence(label: str) -> str:
    """What licence the initial weights `label` carry into the trained model."""
    return WEIGHT_LICENCES.get(label, f"unknown: initial weights '{label}' were supplied by the user; check "
                                      "their licence with whoever supplied them.")


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fold_training_summary(layout: RunLayout, ckpts: Mapping[int, Mapping[str, Any]]) -> tuple[list[dict], float]:
    """Per fold: the selected epoch, its val Dice, the best val Dice of its log; and the total log seconds."""
    folds, seconds = [], 0.0
    for fold, ckpt in ckpts.items():
        log = layout.fold(fold).log
        rows = read_csv(log) if log.is_file() else []
        dices = [d for d in (_float(r.get("val_dice")) for r in rows) if d is not None]
        seconds += sum(s for s in (_float(r.get("seconds")) for r in rows) if s is not None)
        selected = next((_float(r.get("val_dice")) for r in rows if str(r.get("epoch")) == str(ckpt.get("epoch"))),
                        _float(ckpt.get("val_dice")))
        folds.append({"fold": fold, "epochs_logged": len(rows), "selected_epoch": ckpt.get("epoch"),
                      "val_loss_at_selected_epoch": _float(ckpt.get("val_loss")),
                      "val_dice_at_selected_epoch": selected, "best_val_dice": max(dices) if dices else None})
    return folds, seconds


def data_summary(layout: RunLayout, data_dir: Path | None, folds: Sequence[int]) -> dict[str, Any]:
    """Counts per validation fold from folds.csv (and the prepared manifest when reachable); no identifiers."""
    rows = read_csv(layout.folds_csv) if layout.folds_csv.is_file() else []
    manifest = PreparedLayout(data_dir).manifest if data_dir is not None else None
    prepared = {r["id"]: r for r in read_csv(manifest)} if manifest is not None and manifest.is_file() else {}
    per_fold = []
    for fold in folds:
        val = [r for r in rows if str(r.get("fold")) == str(fold)]
        train = [r for r in rows if str(r.get("fold")) != str(fold)]
        entry = {"fold": fold, "validation_images": len(val),
                 "validation_patients": len({r["patient_id"] for r in val}),
                 "training_images": len(train), "training_patients": len({r["patient_id"] for r in train})}
        if prepared:
            entry["validation_images_with_mass"] = sum(prepared.get(r["id"], {}).get("has_mass") == "1" for r in val)
            entry["training_images_with_mass"] = sum(prepared.get(r["id"], {}).get("has_mass") == "1" for r in train)
        per_fold.append(entry)
    used = [prepared[r["id"]] for r in rows if r["id"] in prepared]
    return {
        "folds_csv": "found" if rows else "not found",
        "images": len(rows), "patients": len({r["patient_id"] for r in rows}),
        "images_with_mass": sum(r.get("has_mass") == "1" for r in used) if prepared else None,
        "source_format": sorted(Counter(r.get("source") or "?" for r in used)) if prepared else None,
        "prepared_manifest": "found" if prepared else "not reachable from the run",
        "holdout_images": sum(r.get("split") == "holdout" for r in prepared.values()) if prepared else None,
        "per_fold": per_fold,
    }


def holdout_summary(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The holdout evaluation's headline numbers (eval/summary.json), or None without one."""
    if not summary:
        return None
    keys = ("n", "n_patients", "dice_mean", "dice_sd", "dice_median", "dice_ci95", "ci_unit", "bootstrap_samples",
            "iou_mean", "iou_sd", "lesion_sensitivity", "false_positives_per_image", "lesion_iou_threshold", "split",
            "grid")
    return {k: summary.get(k) for k in keys if k in summary}


def build_card(run_dir: Path, ckpts: Mapping[int, Mapping[str, Any]], context: Mapping[str, Any]) -> dict[str, Any]:
    """card.json's content; `context` holds bundle_id, parameters, contract, threshold, created, version, data_dir."""
    layout = RunLayout(run_dir)
    info = load_run(run_dir, data_dir=context.get("data_dir"))
    first = next(iter(ckpts.values()))
    spec = first["model_spec"]
    folds, seconds = fold_training_summary(layout, ckpts)
    val_dices = [f["val_dice_at_selected_epoch"] for f in folds if f["val_dice_at_selected_epoch"] is not None]
    data = data_summary(layout, info.data_dir, list(ckpts))
    settings = info.settings
    return {
        "card_version": CARD_VERSION,
        "bundle_id": context["bundle_id"], "run_name": Path(run_dir).resolve().name,
        "created": context["created"], "mammoseg_version": context["version"],
        "run_written_by_mammoseg": settings.version if settings else None,
        "model": {"architecture": display_name(spec["encoder"], spec["decoder"]), "encoder": spec["encoder"],
                  "decoder": spec["decoder"], "in_channels": spec["in_channels"], "dropout": spec["dropout"],
                  "parameters": context["parameters"], "folds": list(ckpts),
                  "ensemble": "mean of the folds' sigmoid probabilities, then the threshold"},
        "initial_weights": {"name": info.weights, "licence": weights_licence(info.weights)},
        "preprocessing": context["contract"], "threshold": context["threshold"],
        "training_data": {"dataset": info.dataset, "image_size": first.get("image_size"), **data},
        "cross_validation": {"folds": folds, "mean_val_dice_at_selected_epoch":
                             statistics.fmean(val_dices) if val_dices else None},
        "holdout": holdout_summary(info.summary),
        "training": {"seconds": round(seconds, 1) if seconds else None,
                     "epochs_combo": settings.epochs_combo if settings else None,
                     "epochs_focal_tversky": settings.epochs_focal_tversky if settings else None,
                     "hardware": context.get("hardware") or "not recorded by the run"},
        "intended_use": INTENDED_USE, "limitations": list(LIMITATIONS),
    }


def _num(value: Any, digits: int = 3) -> str:
    return "unknown" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _data_lines(data: Mapping[str, Any]) -> list[str]:
    lines = [f"- Dataset: {data.get('dataset')}; prepared at {data.get('image_size')} px; source format: "
             f"{', '.join(data['source_format']) if data.get('source_format') else 'unknown'}"]
    if data["folds_csv"] != "found":
        return lines + ["- folds.csv not found: image and patient counts unknown",
                        f"- Prepared manifest: {data['prepared_manifest']}"]
    lines.append(f"- Cross-validation images: {data['images']} from {data['patients']} patients"
                 + (f", {data['images_with_mass']} with a mass" if data.get("images_with_mass") is not None else "")
                 + (f"; holdout images: {data['holdout_images']}" if data.get("holdout_images") is not None else ""))
    lines += [f"- Prepared manifest: {data['prepared_manifest']}", "",
              "| fold | validation images | validation patients | training images | training patients |",
              "|---|---|---|---|---|"]
    lines += [f"| {f['fold']} | {f['validation_images']} | {f['validation_patients']} | {f['training_images']} | "
              f"{f['training_patients']} |" for f in data["per_fold"]]
    return lines


def _results_lines(card: Mapping[str, Any]) -> list[str]:
    cv = card["cross_validation"]
    lines = ["| fold | selected epoch | val Dice (selected) | best val Dice |", "|---|---|---|---|"]
    lines += [f"| {f['fold']} | {f['selected_epoch']} | {_num(f['val_dice_at_selected_epoch'])} | "
              f"{_num(f['best_val_dice'])} |" for f in cv["folds"]]
    lines += ["", f"Mean validation Dice at the selected epochs: {_num(cv['mean_val_dice_at_selected_epoch'])} "
                  "(optimistic: the same patients chose the epoch).", ""]
    hold = card.get("holdout")
    if hold:
        ci = hold.get("dice_ci95") or [None, None]
        lines.append(f"Holdout ({hold.get('n')} images, {hold.get('n_patients') or '?'} patients): Dice "
                     f"{_num(hold.get('dice_mean'))} ± {_num(hold.get('dice_sd'))} (95 % CI {_num(ci[0])}–"
                     f"{_num(ci[1])}, bootstrap over {hold.get('ci_unit', '?')}s), IoU {_num(hold.get('iou_mean'))}, "
                     f"lesion sensitivity {_num(hold.get('lesion_sensitivity'))}, false positives per image "
                     f"{_num(hold.get('false_positives_per_image'))}.")
    else:
        lines.append("Holdout: no evaluation recorded in the run (eval/summary.json).")
    return lines


def card_markdown(card: Mapping[str, Any]) -> str:
    """MODEL_CARD.md: the card for people, every number from `card`."""
    model, weights, pre, train = card["model"], card["initial_weights"], card["preprocessing"], card["training"]
    hours = "unknown" if train["seconds"] is None else f"{train['seconds'] / 3600:.2f} h ({train['seconds']:.0f} s)"
    lines = [f"# Model card: {card['run_name']} ({model['architecture']})", "",
             f"Bundle id `{card['bundle_id']}` (the run id its DICOM SEGs record) · written {card['created']} by "
             f"mammoseg {card['mammoseg_version']} · run trained with mammoseg "
             f"{card.get('run_written_by_mammoseg') or 'unknown'}", "",
             "## Intended use", "", card["intended_use"], "",
             "## Model", "",
             f"- {model['architecture']} (encoder {model['encoder']}, decoder {model['decoder']}, "
             f"{model['in_channels']} input channel(s), dropout {model['dropout']}): {model['parameters']:,} "
             "parameters per fold",
             f"- Ensemble of {len(model['folds'])} fold model(s) {model['folds']}: {model['ensemble']} "
             f"({card['threshold']})",
             f"- Initial weights: {weights['name']}. Licence: {weights['licence']}", "",
             "## Preprocessing contract", ""]
    lines += [f"- {key}: {value}" for key, value in pre.items()]
    lines += ["", "## Training data", ""] + _data_lines(card["training_data"])
    lines += ["", "## Results", ""] + _results_lines(card)
    lines += ["", "## Training", "",
              f"- Epochs: {train['epochs_combo']} combo + {train['epochs_focal_tversky']} focal Tversky per fold",
              f"- Training time (sum of the fold logs): {hours}",
              f"- Hardware: {train['hardware']}", "",
              "## Known limitations", ""]
    lines += [f"- {text}" for text in card["limitations"]]
    return "\n".join(lines) + "\n"
