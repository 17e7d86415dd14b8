"""The paper's whole experiment on a prepared folder: ResNet34-UNet, ResNet22-UNet,
ResNet34-FPN and ResNet22-FPN, patient-grouped k-fold training of each, fold-ensemble
prediction of the holdout split, evaluation, and the Table 2 / Figure 2 report.

Both ResNet34 models start from ImageNet weights (--imagenet-weights) and both ResNet22
models from GMIC's (--gmic-weights), as in the paper; without them they train from random
initialisation and the table says so. Rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import argparse

from mammoseg.commands.options import add_device_argument, add_overwrite_argument, add_progress_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared folder (from `mammoseg prepare`)")
    parser.add_argument("--out", required=True, metavar="DIR", help="experiment folder: OUT/<model>/, OUT/report/")
    parser.add_argument("--config", default="paper", metavar="NAME|FILE", help="preset name or YAML file (default paper)")
    parser.add_argument(
        "--imagenet-weights", default=None, metavar="PATH",
        help="torchvision resnet34 ImageNet checkpoint for the ResNet34 models ('imagenet' = torch hub cache/download)",
    )
    parser.add_argument(
        "--gmic-weights", default=None, metavar="PATH", help="GMIC sample_model_N.p for the ResNet22 models"
    )
    parser.add_argument(
        "--models", nargs="+", default=None, metavar="MODEL",
        help="subset of resnet34-unet resnet22-unet resnet34-fpn resnet22-fpn (default all four)",
    )
    add_device_argument(parser)
    add_overwrite_argument(parser, "an earlier reproduce's models, predictions and report in --out (start again)")
    add_progress_argument(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. batch_size=8")


def run(args: argparse.Namespace) -> int:
    from mammoseg.reproduce import StageOptions, reproduce

    # `--models a b key=value` would hand the overrides to --models: take them back.
    models = [m for m in args.models or [] if "=" not in m] or None
    overrides = [m for m in args.models or [] if "=" in m] + list(args.overrides)
    report = reproduce(
        args.data,
        args.out,
        config=args.config,
        imagenet_weights=args.imagenet_weights,
        gmic_weights=args.gmic_weights,
        models=models,
        overrides=overrides,
        stages=StageOptions(device=args.device, progress=not args.no_progress, overwrite=args.overwrite),
    )
    print(f"report: {report}")
    return 0
