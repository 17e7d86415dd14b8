"""A run folder with random-weight fold models, for tests that predict (no training needed).

`write_random_run(folder)` saves one ResNet22-UNet checkpoint per fold in the run layout
(`fold{k}/best.pt`), each seeded by its fold and with its own input normalisation, trained
"at" `image_size` pixels, and the run's `config.yaml` saying that network (as `mammoseg train`
writes it; predict checks every fold against it). Imported as `from run_factory import write_random_run`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mammoseg.checkpoint import save_checkpoint
from mammoseg.config import config_from_dict, save_config
from mammoseg.layouts import RunLayout
from mammoseg.models import build_model

SPEC = {"encoder": "resnet22", "decoder": "unet", "in_channels": 1, "dropout": 0.2}


def write_random_run(folder: str | Path, folds: tuple[int, ...] = (0, 1), image_size: int = 64,
                     breast_crop: tuple[int, ...] = ()) -> Path:
    """A run folder at `folder` whose fold k has random weights (seed k) and norm mean 0.3 + k/10, SD 0.2,
    with the config.yaml of that network; the folds in `breast_crop` say they were trained on
    breast-cropped images (the others carry no such key, as checkpoints before the crop)."""
    layout = RunLayout(folder)
    layout.root.mkdir(parents=True, exist_ok=True)
    save_config(config_from_dict({"name": "test", "model": {**SPEC, "encoder_weights": None}}), layout.config)
    for fold in folds:
        torch.manual_seed(fold)
        model = build_model(SPEC["encoder"], SPEC["decoder"])
        save_checkpoint(layout.fold(fold).best, model, SPEC, {"mean": 0.3 + fold / 10, "std": 0.2}, {"name": "test"},
                        image_size=image_size, fold=fold, epoch=1, val_loss=0.5,
                        **({"breast_crop": True} if fold in breast_crop else {}))
    return layout.root
