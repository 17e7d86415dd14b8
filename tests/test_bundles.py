"""Model bundles: `export --bundle` → one verified .mseg file with its model card; `predict`,
`Segmenter` and `models install` take it; a tampered member is refused before anything loads;
the SEGs name the same run as the run folder's; `export --ensemble` as one ONNX graph."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.uid import generate_uid

from mammoseg import Segmenter
from mammoseg.bundle.archive import BundleError, cache_root, unpack_bundle, verify_bundle
from mammoseg.checkpoint import read_checkpoint, save_checkpoint
from mammoseg.cli import main
from mammoseg.config import config_from_dict, save_config
from mammoseg.inference.run_identity import run_id
from mammoseg.io import read_png, write_csv_atomic
from mammoseg.layouts import RunLayout
from mammoseg.models import build_model

from dicom_factory import textured_breast, write_mg
from run_factory import SPEC, write_random_run


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    """Each test's own bundle cache and models folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MAMMOSEG_MODELS_DIR", str(tmp_path / "models"))



@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A two-fold random run with logs, folds.csv and a holdout evaluation, its bundle, and a DICOM."""
    root = tmp_path_factory.mktemp("shared")
    run = write_random_run(root / "r22-demo", folds=(0, 1))
    layout = RunLayout(run)
    save_config(config_from_dict({"name": "test", "model": {**SPEC, "encoder_weights": "gmic:/w/sample_model.p"}}),
                layout.config)
    write_csv_atomic(layout.folds_csv, [{"id": f"img{i}", "patient_id": f"SECRET-P{i // 2}", "fold": i % 2}
                                        for i in range(6)], ["id", "patient_id", "fold"])
    for fold in (0, 1):
        rows = [{"epoch": e, "phase": "combo", "lr": 1e-4, "train_loss": 1, "val_loss": 0.5, "val_dice": d,
                 "seconds": 10.5} for e, d in ((1, 0.4 + fold / 10), (2, 0.3))]
        write_csv_atomic(layout.fold(fold).log, rows, list(rows[0]))
    layout.eval.mkdir()
    (layout.eval / "summary.json").write_text(json.dumps({"n": 3, "dice_mean": 0.61, "dice_sd": 0.2,
                                                          "dice_ci95": [0.4, 0.8], "ci_unit": "patient",
                                                          "n_patients": 2}))
    bundle = root / "r22.mseg"
    assert main(["export", "--run", str(run), "--bundle", "--out", str(bundle)]) == 0
    dicoms = root / "dicoms"
    write_mg(dicoms / "mg0.dcm", textured_breast(150, 110, 0), bits_stored=12, PatientID="P0", WindowCenter=2048,
             WindowWidth=4096, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())
    return run, bundle, dicoms / "mg0.dcm"


def _rezip(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    """A copy of the bundle with some members' bytes replaced (and members added)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, change.pop(info.filename, zin.read(info)))
        for name, data in change.items():
            zout.writestr(name, data)


@pytest.mark.timeout(60)
def test_bundle_members_manifest_and_weights(shared):
    run, bundle, _ = shared
    with zipfile.ZipFile(bundle) as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        assert names == sorted(["manifest.json", "config.yaml", "contract.json", "card.json", "MODEL_CARD.md",
                                "fold0/best.pt", "fold1/best.pt"])
        for name, entry in manifest["members"].items():
            data = archive.read(name)
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
        assert archive.read("config.yaml") == RunLayout(run).config.read_bytes()
        texts = b"".join(archive.read(n) for n in names if not n.endswith(".pt"))
    assert b"SECRET" not in texts  # no patient identifier leaves the run
    assert manifest["bundle_id"] == run_id(run) and manifest["run_name"] == "r22-demo" and manifest["threshold"] == 0.5
    run_dir, _ = unpack_bundle(bundle)
    for fold in (0, 1):
        packed, original = read_checkpoint(run_dir / f"fold{fold}" / "best.pt"), read_checkpoint(
            RunLayout(run).fold(fold).best)
        assert set(packed) - set(original) == {"val_dice"} and "optimiser" not in packed
        assert packed["norm"] == original["norm"] and packed["image_size"] == 64
        assert all(torch.equal(packed["model"][k], original["model"][k]) for k in original["model"])
    contract = json.loads((run_dir / "contract.json").read_text())
    assert contract["image_size"] == 64 and contract["normalisation"][1] == {"fold": 1, "mean": 0.4, "std": 0.2}


@pytest.mark.timeout(60)
def test_model_card_from_the_run(shared):
    _, bundle, _ = shared
    card = json.loads(zipfile.ZipFile(bundle).read("card.json"))
    assert card["initial_weights"]["name"] == "GMIC" and card["initial_weights"]["licence"].startswith("AGPL-3.0")
    assert card["model"]["parameters"] == sum(p.numel() for p in build_model("resnet22", "unet").parameters())
    assert card["training"]["seconds"] == 42.0  # 2 folds × 2 epochs × 10.5 s
    assert [f["best_val_dice"] for f in card["cross_validation"]["folds"]] == [0.4, 0.5]
    assert [f["val_dice_at_selected_epoch"] for f in card["cross_validation"]["folds"]] == [0.4, 0.5]
    per_fold = card["training_data"]["per_fold"]
    assert [(f["validation_images"], f["validation_patients"], f["training_images"]) for f in per_fold] == [
        (3, 3, 3), (3, 3, 3)]
    assert card["holdout"]["dice_ci95"] == [0.4, 0.8] and "not for clinical diagnosis" in card["intended_use"]
    text = zipfile.ZipFile(bundle).read("MODEL_CARD.md").decode()
    assert "AGPL-3.0" in text and "95 % CI 0.400–0.800" in text and card["bundle_id"] in text


@pytest.mark.timeout(120)
def test_predict_from_bundle_equals_predict_from_run_with_the_same_run_id(shared, tmp_path):
    pytest.importorskip("highdicom")
    import pydicom

    from mammoseg.dicom.seg import SegIdentity
    from mammoseg.inference.run_identity import run_identity

    run, bundle, dicom = shared
    outs = {}
    for flag, source in (("--run", run), ("--model", bundle)):
        outs[flag] = out = tmp_path / flag.strip("-")
        assert main(["predict", flag, str(source), "--input", str(dicom), "--out", str(out), "--device", "cpu",
                     "--no-progress", "--dicom-seg"]) == 0
    a, b = (read_png(outs[f] / "masks" / "mg0.png") for f in ("--run", "--model"))
    assert a.tobytes() == b.tobytes()
    ids = [json.loads((outs[f] / "predict.json").read_text())["run_id"] for f in ("--run", "--model")]
    assert ids[0] == ids[1] == run_id(run)
    segs = [pydicom.dcmread(outs[f] / "seg" / "mg0.dcm") for f in ("--run", "--model")]
    assert segs[0].PixelData == segs[1].PixelData
    # the identity `predict --dicomweb` records in every SEG (and finds stored ones by): the same
    unpacked, _ = unpack_bundle(bundle)
    assert run_identity(unpacked, 0.5) == run_identity(run, 0.5) == SegIdentity("r22-demo", run_id(run), 0.5)


@pytest.mark.timeout(60)
def test_a_tampered_member_is_refused_before_anything_loads(shared, tmp_path, capsys):
    _, bundle, dicom = shared
    with zipfile.ZipFile(bundle) as archive:
        weights = bytearray(archive.read("fold1/best.pt"))
    weights[len(weights) // 2] ^= 1
    cases = {"fold1/best.pt": {"fold1/best.pt": bytes(weights)},
             "evil.py": {"evil.py": b"print('hi')"},
             "bundle id": {"manifest.json": zipfile.ZipFile(bundle).read("manifest.json").replace(b'"fold": 1',
                                                                                                  b'"fold": 2')}}
    for reason, change in cases.items():
        bad = tmp_path / "bad.mseg"
        _rezip(bundle, bad, dict(change))
        out = tmp_path / "pred"
        assert main(["predict", "--run", str(bad), "--input", str(dicom), "--out", str(out), "--device", "cpu",
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err, err
        assert (reason in err) if reason != "bundle id" else ("fold 2" in err or "bundle id" in err), err
        assert not out.exists() and not cache_root().exists()  # nothing unpacked, nothing written
    with pytest.raises(BundleError, match="not a readable zip"):
        verify_bundle(dicom)


@pytest.mark.timeout(60)
def test_an_altered_unpacked_copy_is_unpacked_again(shared):
    _, bundle, _ = shared
    run_dir, manifest = unpack_bundle(bundle)
    ckpt = run_dir / "fold0" / "best.pt"
    original = ckpt.read_bytes()
    torch.manual_seed(7)  # another network's weights in the cache: its run id no longer matches the bundle's
    save_checkpoint(ckpt, build_model("resnet22", "unet"), SPEC, {"mean": 0.3, "std": 0.2}, {"name": "x"},
                    image_size=64, fold=0, epoch=1, val_loss=0.5)
    assert run_id(run_dir) != manifest.bundle_id
    again, _ = unpack_bundle(bundle)
    assert again == run_dir and ckpt.read_bytes() == original and run_id(run_dir) == manifest.bundle_id


@pytest.mark.timeout(90)
def test_models_install_list_show_remove_and_segmenter_by_name(shared, tmp_path, capsys):
    run, bundle, dicom = shared
    assert main(["models", "install", str(bundle), "--name", "r22"]) == 0
    installed = tmp_path / "models" / "r22.mseg"
    assert installed.read_bytes() == bundle.read_bytes()
    assert main(["models", "install", str(bundle), "--name", "r22"]) == 2
    assert "is installed" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "r22\t" in listed and run_id(run) in listed and "ResNet22-UNet" in listed and "2 fold(s)" in listed
    assert main(["models", "show", "r22"]) == 0 and "# Model card: r22-demo" in capsys.readouterr().out
    by_name, by_run = Segmenter.from_run("r22", device="cpu"), Segmenter.from_run(run, device="cpu")
    assert by_name.segment(dicom).mask.tobytes() == by_run.segment(dicom).mask.tobytes()
    assert main(["models", "remove", "r22"]) == 0 and not installed.exists()
    assert main(["models", "remove", "r22"]) == 2 and "no installed model" in capsys.readouterr().err
    assert main(["models", "install", str(bundle), "--name", "../x"]) == 2


@pytest.mark.timeout(60)
def test_export_bundle_refuses_to_overwrite(shared, tmp_path, capsys):
    run, _, _ = shared
    out = tmp_path / "m.mseg"
    out.write_bytes(b"mine")
    assert main(["export", "--run", str(run), "--bundle", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"mine"


@pytest.mark.timeout(120)
def test_ensemble_onnx_matches_predict_probabilities_on_a_dicom(shared, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from mammoseg.geometry import standardise
    from mammoseg.inference.ensemble import batch_probability, load_ensemble
    from mammoseg.prepare.image import read_image

    run, bundle, dicom = shared
    out = tmp_path / "ensemble.onnx"
    assert main(["export", "--run", str(bundle), "--ensemble", "--out", str(out), "--sample-size", "64",
                 "--no-verify"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["run_id"] == run_id(run) and json.loads(meta["preprocessing"])["image_size"] == 64
    assert json.loads(meta["folds"]) == [0, 1] and meta["threshold"] == "0.5"
    image = standardise(read_image(dicom)[0], 64).image
    with torch.inference_mode():  # as predict runs it
        expected = batch_probability(load_ensemble(run).members, [image], torch.device("cpu"))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": (image.astype(np.float32) / 65535.0)[None, None]})
    assert got.shape == (1, 1, 64, 64) and 0.01 < float(expected.std())
    assert float(np.abs(got[0, 0] - expected[0]).max()) < 1e-4


def test_a_bundle_of_folds_trained_on_cropped_images_keeps_the_crop(tmp_path):
    run = write_random_run(tmp_path / "cropped", folds=(0, 1), breast_crop=(0, 1))
    bundle = tmp_path / "cropped.mseg"
    assert main(["export", "--run", str(run), "--bundle", "--out", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as archive:
        contract = json.loads(archive.read("contract.json"))
    assert "breast_crop" in contract and contract["output"].endswith("0 outside the breast box")
    seg = Segmenter.from_run(bundle, device="cpu")
    assert seg.ensemble.breast_crop is True
    image = textured_breast(150, 110, 0)
    result = seg.segment(image)
    assert result.geometry.cropped and result.mask.shape == image.shape
    plain = write_random_run(tmp_path / "plain", folds=(0,))
    assert main(["export", "--run", str(plain), "--bundle", "--out", str(tmp_path / "plain.mseg")]) == 0
    with zipfile.ZipFile(tmp_path / "plain.mseg") as archive:
        assert "breast_crop" not in json.loads(archive.read("contract.json"))
