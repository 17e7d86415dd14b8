"""Export a trained run: one fold, or the whole fold ensemble, to ONNX; or the run as a bundle.

`--fold K`: the ONNX input is the normalised image (B, C, H, W) float32, the output logits
(B, 1, H, W); the checkpoint's normalisation (mean, std on the [0, 1] scale), model spec and
training image size are stored in the file's metadata_props.

`--ensemble`: one ONNX graph for every fold: input ``image`` (B, 1, H, W) float32 in [0, 1]
(the prepared uint16 image / 65535), output ``probability`` (B, 1, H, W), the mean of the folds'
sigmoid probabilities, each fold's normalisation inside the graph; the preprocessing contract,
threshold and run id are in metadata_props.

`--bundle`: one `.mseg` file (a zip) holding the folds' weights, config, preprocessing contract,
threshold and a model card, each member with its SHA-256 in manifest.json; `mammoseg predict
--model FILE` and `mammoseg models install FILE` take it (README, "Sharing a model").
"""

from __future__ import annotations

import argparse

from mammoseg.commands.options import add_overwrite_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN",
                        help="run folder written by `mammoseg train` (or, with --fold/--ensemble, a bundle)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--fold", type=int, metavar="K", help="export fold K's best.pt to ONNX")
    what.add_argument("--ensemble", action="store_true", help="export every fold as one ONNX graph (their mean)")
    what.add_argument("--bundle", action="store_true", help="write the run as one shareable .mseg bundle")
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write, e.g. model.onnx or model.mseg")
    parser.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset version (default 17)")
    parser.add_argument(
        "--sample-size", type=int, default=256, metavar="S",
        help="side of the square sample traced during export (default 256; H and W stay dynamic)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")
    parser.add_argument("--threshold", type=float, default=None,
                        help="with --bundle/--ensemble: the threshold to publish (default: the run's holdout "
                             "prediction's, else 0.5)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="with --bundle: the prepared folder the run was trained on, for the model card's "
                             "data summary (default: the one the run records)")
    add_overwrite_argument(parser, "an existing output file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    if args.bundle:
        return _export_bundle(args, out)
    from mammoseg.models.export import supported_opsets

    opsets = supported_opsets()
    if args.opset not in opsets:
        raise ValueError(f"--opset {args.opset}: this installation exports opsets {opsets.start} to {opsets.stop - 1}")
    if args.data is not None:
        raise ValueError("--data: only with --bundle")
    from mammoseg.bundle.store import resolve_model

    run_dir = resolve_model(args.run).run_dir
    if args.ensemble:
        return _export_ensemble(args, run_dir, out)
    if args.threshold is not None:
        raise ValueError("--threshold: only with --bundle or --ensemble")
    return _export_fold(args, run_dir, out)


def _export_fold(args: argparse.Namespace, run_dir, out) -> int:
    import json

    from mammoseg.checkpoint import load_fold_model
    from mammoseg.layouts import RunLayout
    from mammoseg.models.export import export_onnx

    ckpt_path = RunLayout(run_dir).fold(args.fold).best
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
    return _verify(args, model, out, "logit")


def _export_ensemble(args: argparse.Namespace, run_dir, out) -> int:
    from mammoseg.bundle.onnx import export_ensemble_onnx

    net, metadata = export_ensemble_onnx(run_dir, out, threshold=args.threshold, opset=args.opset,
                                         sample_size=args.sample_size)
    print(f"wrote {out} ({metadata['architecture']}, {len(net.folds)} folds in one graph, run id "
          f"{metadata['run_id']}, opset {args.opset})")
    return _verify(args, net, out, "probability")


def _verify(args: argparse.Namespace, model, out, what: str) -> int:
    """The onnxruntime parity check at a size other than the traced one (skipped without onnxruntime)."""
    from mammoseg.models.export import onnx_max_abs_diff

    if args.no_verify:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: parity check skipped (pip install 'mammoseg[onnx]')")
        return 0
    side = args.sample_size + 32
    diff = onnx_max_abs_diff(model, out, size=(side, side - 16))
    print(f"onnxruntime parity at {side}x{side - 16}: max |{what} difference| = {diff:.3g}")
    return 0


def _export_bundle(args: argparse.Namespace, out) -> int:
    from pathlib import Path

    from mammoseg.bundle.writer import write_bundle

    if not Path(args.run).is_dir():
        raise NotADirectoryError(f"{args.run}: --bundle needs a run folder written by `mammoseg train`")
    manifest = write_bundle(args.run, out, threshold=args.threshold, data_dir=args.data, overwrite=args.overwrite)
    print(f"wrote {out}: bundle {manifest.bundle_id} of run {manifest.run_name} ({len(manifest.folds)} fold(s), "
          f"threshold {manifest.threshold:g}); see its MODEL_CARD.md with `mammoseg models show {out}`")
    return 0
