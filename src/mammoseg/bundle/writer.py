"""`mammoseg export --bundle`: a run folder → one `.mseg` file (layout in `bundle.archive`).

Why re-save the weights: `best.pt` may carry more than a model needs (and `last.pt` carries
the optimiser); the bundle holds each fold's best weights alone, in the checkpoint format
`load_fold_model` reads with `weights_only`, each checked against the run's config.yaml first
exactly as `predict` checks it. Patient identifiers (folds.csv, the manifest) stay behind:
the model card keeps only counts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mammoseg.bundle.archive import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    CARD_JSON,
    CARD_MD,
    CONFIG,
    CONTRACT,
    MANIFEST,
    POSTPROCESSING,
    BundleManifest,
    verify_bundle,
)
from mammoseg.bundle.card import build_card, card_markdown
from mammoseg.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from mammoseg.inference.ensemble import check_member, check_same_crop, run_architecture
from mammoseg.inference.postprocess import CONNECTIVITY, read_record, rule_from_record, run_postprocessing
from mammoseg.inference.run_identity import file_sha256, fold_digests, id_from_digests
from mammoseg.io import atomic_path
from mammoseg.layouts import PredictionLayout, RunLayout
from mammoseg.models import count_parameters
from mammoseg.version import __version__

DEFAULT_THRESHOLD = 0.5
#: A fixed member date, so the same members give the same archive bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def preprocessing_contract(ckpts: Mapping[int, Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    """What a consumer must do to an image before the models see it (docs/method.md, geometry.py)."""
    first = next(iter(ckpts.values()))
    channels = int(first["model_spec"]["in_channels"])
    return {
        "windowing": "DICOM: modality LUT, then the VOI LUT Sequence or the first Window Center/Width with its VOI "
                     "LUT Function, mapped to 0..65535 (window bottom 0, top 65535); MONOCHROME1 inverted after "
                     "the VOI; Pixel Padding Value pixels 0; a file without a VOI gets the Otsu breast-region "
                     "window from the 0.1st to the 99.9th percentile (mammoseg.dicom.read_mammogram)",
        "pad": "zeros to a square of side max(height, width): columns on the side away from the chest wall (the "
               "brighter outer 10 % band; ties left), rows at the bottom (mammoseg.geometry.plan_pad_resize)",
        "resize": "area averaging (OpenCV INTER_AREA) of the square to image_size x image_size, uint16",
        "image_size": int(first["image_size"]),
        **({"breast_crop": "before the padding, the image is cut to the box around the breast "
                           "(mammoseg.geometry.find_breast_box); the pad and the chest side apply to that box"}
           if breast_crop(ckpts) else {}),
        "input_scale": "uint16 / 65535 -> [0, 1]",
        "normalisation": [{"fold": k, "mean": float(c["norm"]["mean"]), "std": float(c["norm"]["std"])}
                          for k, c in ckpts.items()],
        "in_channels": channels,
        "channels": "grey repeated to 3 channels" if channels == 3 else "grey, one channel",
        "output": "each fold's sigmoid probability, averaged; mask = mean >= threshold, mapped back to the "
                  "original grid by a bilinear resize to the padded square and cropping the padding"
                  + ("; 0 outside the breast box" if breast_crop(ckpts) else ""),
        "threshold": float(threshold),
    }


def breast_crop(ckpts: Mapping[int, Mapping[str, Any]]) -> bool:
    """Whether the folds were trained on images cut to the breast (checkpoints before the crop: no;
    `fold_checkpoints` refuses folds that disagree)."""
    return any(bool(c.get("breast_crop", False)) for c in ckpts.values())


def run_threshold(layout: RunLayout) -> float:
    """The threshold the run chose on its out-of-fold predictions (postprocessing.json), else the one its
    holdout prediction used (its predict.json), else 0.5."""
    try:
        chosen = read_record(layout)
        if chosen is not None:
            return rule_from_record(chosen, str(layout.postprocessing)).threshold
    except ValueError:
        pass
    try:
        value = json.loads(PredictionLayout(layout.holdout_pred).summary.read_text(encoding="utf-8")).get("threshold")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_THRESHOLD
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else DEFAULT_THRESHOLD


def fold_checkpoints(layout: RunLayout) -> dict[int, dict[str, Any]]:
    """Every fold's best checkpoint, read and checked against the run as predict checks it."""
    paths = layout.best_checkpoints()
    if not paths:
        raise FileNotFoundError(f"{layout.root}: no fold*/best.pt checkpoints; has this run been trained "
                                "(`mammoseg train`)?")
    expected = run_architecture(layout)
    ckpts = {}
    for fold, path in zip((f.fold for f in layout.folds() if f.best.is_file()), paths):
        ckpt = read_checkpoint(path)
        check_member(path, ckpt, expected)
        ckpts[fold] = ckpt
    if len({int(c["image_size"]) for c in ckpts.values()}) != 1:
        raise ValueError(f"{layout.root}: fold checkpoints were trained at different image sizes")
    check_same_crop(layout.root, {f"fold{k}": bool(c.get("breast_crop", False)) for k, c in ckpts.items()})
    return ckpts


def _resave(folder: Path, layout: RunLayout, ckpts: Mapping[int, Mapping[str, Any]]) -> int:
    """Each fold's weights alone as folder/fold{k}/best.pt; the parameter count of one fold."""
    parameters = 0
    for fold, ckpt in ckpts.items():
        model = model_from_checkpoint(layout.fold(fold).best, ckpt)
        parameters = count_parameters(model)
        save_checkpoint(folder / f"fold{fold}" / "best.pt", model, ckpt["model_spec"], ckpt["norm"], ckpt["config"],
                        image_size=ckpt["image_size"], fold=ckpt["fold"], epoch=ckpt["epoch"],
                        val_loss=ckpt["val_loss"], val_dice=ckpt.get("val_dice"),
                        **({"breast_crop": True} if ckpt.get("breast_crop") else {}))
    return parameters


def write_bundle(run_dir: str | os.PathLike, out: str | os.PathLike, threshold: float | None = None,
                 data_dir: str | os.PathLike | None = None, overwrite: bool = False) -> BundleManifest:
    """Write the run's bundle to `out` atomically (refused when `out` exists, unless `overwrite`)."""
    layout, out = RunLayout(run_dir), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    ckpts = fold_checkpoints(layout)
    digests = fold_digests(layout.root)
    bundle_id = id_from_digests(digests)
    rule = run_postprocessing(layout, bundle_id)  # refused when chosen for other fold models, or unreadable
    threshold = run_threshold(layout) if threshold is None else float(threshold)
    contract = preprocessing_contract(ckpts, threshold)
    if rule is not None:
        contract["postprocessing"] = {**rule.components(), "connectivity": CONNECTIVITY,
                                      "rule": "components of mean >= threshold on the image_size grid; those "
                                              "smaller than min_area pixels dropped, then (keep_most_probable) all "
                                              "but the one of highest maximum probability; dropped pixels set to 0 "
                                              "before the mapping back to the original grid"}
    with tempfile.TemporaryDirectory(prefix="mammoseg-bundle-") as tmp:
        folder = Path(tmp)
        parameters = _resave(folder, layout, ckpts)
        context = {"bundle_id": bundle_id, "parameters": parameters, "contract": contract, "threshold": threshold,
                   "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": __version__,
                   "data_dir": data_dir}
        card = build_card(layout.root, ckpts, context)
        (folder / CONFIG).write_bytes(layout.config.read_bytes())
        (folder / CONTRACT).write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
        (folder / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        (folder / CARD_MD).write_text(card_markdown(card), encoding="utf-8")
        names = [CONFIG, CONTRACT, CARD_JSON, CARD_MD, *(f"fold{k}/best.pt" for k in ckpts)]
        if rule is not None:  # the rules it chose travel with the models they were chosen for
            (folder / POSTPROCESSING).write_bytes(layout.postprocessing.read_bytes())
            names.append(POSTPROCESSING)
        manifest = {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "bundle_id": bundle_id,
            "run_name": layout.root.resolve().name, "threshold": threshold, "mammoseg": __version__,
            "created": context["created"],
            "members": {n: {"sha256": file_sha256(folder / n).hex(), "size": (folder / n).stat().st_size}
                        for n in names},
            "folds": [{"fold": k, "member": f"fold{k}/best.pt", "source_sha256": digest.hex()}
                      for k, (_name, digest) in zip(ckpts, digests)],
        }
        _write_zip(out, folder, names, manifest)
    return verify_bundle(out)


def _write_zip(out: Path, folder: Path, names: list[str], manifest: Mapping[str, Any]) -> None:
    """The archive, manifest first, members streamed in (stored: checkpoints do not compress)."""
    with atomic_path(out, durable=True) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr(_info(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name in names:
            with open(folder / name, "rb") as src, archive.open(_info(name), "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED if name.endswith(".pt") else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info
