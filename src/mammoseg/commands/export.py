"""Export one fold's trained model to ONNX (dynamic batch, height and width).

The ONNX input is the normalised image (B, C, H, W) float32; the output is logits
(B, 1, H, W). The checkpoint's normalisation (mean, std on the [0, 1] scale), model
spec and training image size are stored in the file's metadata_props.
"""

from __future__ import annotations

import argparse

from mammoseg.commands.options import add_overwrite_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="run folder written by `mammoseg train`")
    parser.add_argument("--fold", required=True, type=int, metavar="K", help="fold whose best.pt to export")
    parser.add_argument("--out", required=True, metavar="FILE", help="ONNX file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset version (default 17)")
    parser.add_argument(
        "--sample-size", type=int, default=256, metavar="S",
        help="side of the square sample traced during export (default 256; H and W stay dynamic)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")
    add_overwrite_argument(parser, "an existing ONNX file")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mammoseg.checkpoint import load_fold_model
    from mammoseg.layouts import RunLayout
    from mammoseg.models.export import export_onnx, onnx_max_abs_diff, supported_opsets

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    opsets = supported_opsets()
    if args.opset not in opsets:
        raise ValueError(f"--opset {args.opset}: this installation exports opsets {opsets.start} to {opsets.stop - 1}")
    ckpt_path = RunLayout(args.run).fold(args.fold).best
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: no such checkpoint (is --run a training run with fold {args.fold}?)")
    model, ckpt = load_fold_model(ckpt_path)
    spec = ckpt["model_spec"]
    metadata = {
        "producer": "mammoseg",
        "model_spec": json.dumps(spec, sort_keys=True),
        "norm_mean": ckpt["norm"]["mean"],
        "norm_std": ckpt["norm"]["std"],
        "image_size": ckpt.get("image_size"),
        "fold": ckpt.get("fold"),
        "epoch": ckpt.get("epoch"),
        "val_loss": ckpt.get("val_loss"),
        "input": "(B, in_channels, H, W) float32: (image in [0,1] - norm_mean) / norm_std, grey repeated to in_channels",
        "output": "(B, 1, H, W) logits; sigmoid > 0.5 is the mask",
    }
    export_onnx(
        model, out, in_channels=spec["in_channels"], sample_size=(args.sample_size, args.sample_size),
        opset=args.opset, metadata=metadata,
    )
    print(f"wrote {out} ({spec['encoder']}-{spec['decoder']}, fold {args.fold}, opset {args.opset})")
    if not args.no_verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnxruntime not installed: parity check skipped (pip install 'mammoseg[onnx]')")
            return 0
        side = args.sample_size + 32
        diff = onnx_max_abs_diff(model, out, size=(side, side - 16))
        print(f"onnxruntime parity at {side}x{side - 16}: max |logit difference| = {diff:.3g}")
    return 0
