"""Fold-ensemble prediction: probability averaging, TTA, mapping back to DICOM grids, the command."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from torch import nn

from mammoseg.inference.ensemble import EnsembleMember, ensemble_probability, threshold_probability
from mammoseg.inference.inputs import collect_inputs, load_item
from mammoseg.inference.outputs import overlay_image, write_outputs
from mammoseg.io import read_csv, read_png, write_bytes_atomic

from dicom_factory import mg_dataset, save_dataset
from prepared_factory import Case, write_prepared
from run_factory import write_random_run

UNIT_NORM = {"mean": 0.0, "std": 1.0}


class ConstantLogit(nn.Module):
    def __init__(self, logit: float):
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[2:]), self.logit)


class Ramp(nn.Module):
    """logit = 4·x − 2 + a ramp across the width: not symmetric under a horizontal flip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1.0, 1.0, x.shape[-1]).view(1, 1, 1, -1)
        return 4.0 * x[:, :1] - 2.0 + ramp


class Intensity(nn.Module):
    """logit = gain·(first channel − level): an intensity threshold as a 'model'."""

    def __init__(self, level: float = 0.0, gain: float = 1.0):
        super().__init__()
        self.level, self.gain = level, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (x[:, :1] - self.level)


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --------------------------------------------------------------------------- ensemble core


def test_fold_average_is_of_probabilities_not_masks():
    images = torch.rand(2, 1, 8, 8)
    # Two of three folds say 0.6 (mask 1), one says 0.0 (mask 0): a mask vote gives 1,
    # the mean probability 0.4 gives 0.
    members = [EnsembleMember(ConstantLogit(logit(p)), UNIT_NORM) for p in (0.6, 0.6, 1e-6)]
    prob = ensemble_probability(members, images)
    assert prob.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(prob.numpy(), (0.6 + 0.6 + 1e-6) / 3, rtol=1e-5)
    votes = np.mean([p >= 0.5 for p in (0.6, 0.6, 1e-6)])
    assert votes >= 0.5 and not threshold_probability(prob.numpy()).any()
    # The other direction: one very sure fold outweighs two unsure ones.
    members = [EnsembleMember(ConstantLogit(logit(p)), UNIT_NORM) for p in (0.99, 0.4, 0.45)]
    prob = ensemble_probability(members, images).numpy()
    np.testing.assert_allclose(prob, (0.99 + 0.4 + 0.45) / 3, rtol=1e-5)
    assert threshold_probability(prob).all()


def test_each_member_uses_its_own_normalisation_and_channels():
    images = torch.tensor([0.2, 0.5, 0.8, 1.0]).view(1, 1, 2, 2)
    members = [
        EnsembleMember(Intensity(), {"mean": 0.5, "std": 0.25}, in_channels=1),
        EnsembleMember(Intensity(), {"mean": 0.1, "std": 0.5}, in_channels=3),
    ]
    prob = ensemble_probability(members, images).numpy().ravel()
    expected = [(sig((v - 0.5) / 0.25) + sig((v - 0.1) / 0.5)) / 2 for v in (0.2, 0.5, 0.8, 1.0)]
    np.testing.assert_allclose(prob, expected, rtol=1e-5)


def test_tta_flips_the_probability_back():
    torch.manual_seed(0)
    images = torch.rand(1, 1, 4, 6)
    member = EnsembleMember(Ramp(), UNIT_NORM)
    x = images[0, 0].numpy().astype(np.float64)
    ramp = np.linspace(-1.0, 1.0, 6)
    plain = 1 / (1 + np.exp(-(4 * x - 2 + ramp)))
    # f(flip(x)) at column j sees x[W-1-j] with ramp[j]; flipped back, column j has x[j] with ramp[W-1-j].
    flipped_back = 1 / (1 + np.exp(-(4 * x - 2 + ramp[::-1])))
    np.testing.assert_allclose(ensemble_probability([member], images)[0, 0].numpy(), plain, rtol=1e-5)
    got = ensemble_probability([member], images, tta=True)[0, 0].numpy()
    np.testing.assert_allclose(got, (plain + flipped_back) / 2, rtol=1e-5)
    assert not np.allclose(got, plain, atol=1e-3)


def test_threshold_and_overlay():
    prob = np.array([[0.2, 0.5], [0.7, 0.49]], np.float32)
    np.testing.assert_array_equal(threshold_probability(prob), [[0, 255], [255, 0]])
    image = np.full((3000, 1500), 30000, np.uint16)
    pred = np.zeros((3000, 1500), np.uint8)
    pred[1000:2000, 500:1000] = 255
    ref = np.zeros_like(pred)
    ref[200:400, 200:400] = 255
    rgb = overlay_image(image, pred, ref)
    assert rgb.shape == (1024, 512, 3) and rgb.dtype == np.uint8
    # Predicted contour red, reference green, elsewhere the grey image (30000 >> 8 = 117).
    scale = 1024 / 3000

    def box(colour):
        ys, xs = np.nonzero((rgb == colour).all(axis=-1))
        return ys.min(), xs.min(), ys.max(), xs.max()

    expected_pred = (1000 * scale, 500 * scale, 2000 * scale, 1000 * scale)
    expected_ref = (200 * scale, 200 * scale, 400 * scale, 400 * scale)
    np.testing.assert_allclose(box((255, 40, 40)), expected_pred, atol=2.5)
    np.testing.assert_allclose(box((40, 255, 40)), expected_ref, atol=2.5)
    assert (rgb[500, 250] == 117).all() and (rgb[900, 100] == 117).all()


# --------------------------------------------------------------------------- DICOM inputs


def write_mg(path, pixels: np.ndarray, laterality: str = "L") -> Dataset:
    """A minimal MONOCHROME2 MG file with a linear window over the 12-bit range."""
    ds = mg_dataset(
        pixels, bits_stored=12, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
        PatientID="P7", ImageLaterality=laterality, ViewPosition="CC",
        PresentationIntentType="FOR PRESENTATION", WindowCenter=2048, WindowWidth=4096,
    )
    save_dataset(ds, path)
    return ds


def phantom(height: int, width: int, chest: str, disc: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A breast (half-ellipse against the chest wall, value 1000) with a bright disc (3000)."""
    yy, xx = np.mgrid[:height, :width]
    x0 = 0 if chest == "left" else width - 1
    breast = ((yy - height / 2) / (height * 0.45)) ** 2 + ((xx - x0) / (width * 0.8)) ** 2 <= 1
    cy, cx, r = disc
    mass = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    pixels = np.where(breast, 1000, 0)
    pixels[mass] = 3000
    return pixels, mass


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("shape,chest,disc", [((300, 170), "left", (90, 50, 22)), ((150, 260), "right", (100, 200, 18))])
def test_dicom_prediction_lands_on_the_original_grid(tmp_path, shape, chest, disc, crop):
    pixels, mass = phantom(*shape, chest, disc)
    write_mg(tmp_path / "mg.dcm", pixels, "L" if chest == "left" else "R")
    (item,), errors = collect_inputs([tmp_path / "mg.dcm"])
    assert not errors and item.kind == "dicom"
    loaded = load_item(item, size=96, crop=crop)
    assert loaded.model_input.shape == (96, 96) and loaded.display.shape == shape
    assert loaded.plan.cropped == crop  # with the crop, the mask still lands on the full original grid
    # The 'model': windowed intensity above 0.5 (the disc is ~0.73, the breast ~0.24).
    member = EnsembleMember(Intensity(level=0.5, gain=40.0), UNIT_NORM)
    x = torch.from_numpy(loaded.model_input.astype(np.float32) / 65535.0)[None, None]
    prob = ensemble_probability([member], x)[0, 0].numpy()
    row = write_outputs(loaded, prob, tmp_path / "pred", 0.5, save_prob=True, dicom_seg=False)
    assert row["grid"] == "original" and (row["height"], row["width"]) == shape
    mask = read_png(tmp_path / "pred" / "masks" / "mg.png")
    assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
    assert iou(mask > 0, mass) > 0.9
    # Every predicted pixel within 2 px of the disc, every pixel 2 px inside it predicted.
    import cv2

    kernel = np.ones((5, 5), np.uint8)
    near = cv2.dilate(mass.astype(np.uint8), kernel) > 0
    core = cv2.erode(mass.astype(np.uint8), kernel) > 0
    assert not (mask > 0)[~near].any() and (mask > 0)[core].all()
    assert read_png(tmp_path / "pred" / "prob" / "mg.png").dtype == np.uint16


# --------------------------------------------------------------------------- the command, end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder with two random-weight ResNet22-UNet folds at 64 px (norm means 0.3 and 0.4)."""
    return write_random_run(tmp_path_factory.mktemp("run"))


def _prepared(tmp_path, n: int = 3) -> tuple:
    data = tmp_path / "prepared"
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        mask = np.zeros((64, 64), np.uint8)
        mask[10 + i : 30, 20:40] = 255
        image = rng.integers(0, 65535, (64, 64), dtype=np.uint16)
        cases.append(Case(f"img{i}", f"p{i}", image, mask, "holdout" if i else "train"))
    cases.append(Case("broken", "pb", np.zeros((64, 64), np.uint16), split="holdout", columns={"mask": ""}))
    rows = write_prepared(data, cases)
    write_bytes_atomic(data / "images" / "broken.png", b"not a png")
    return data, rows


def test_predict_command_on_prepared_folder(tmp_path, tiny_run, caplog):
    from mammoseg.checkpoint import load_fold_model
    from mammoseg.cli import main

    data, rows = _prepared(tmp_path)
    out = tmp_path / "pred"
    rc = main(["predict", "--device", "cpu", "--run", str(tiny_run), "--input", str(data), "--out", str(out), "--save-prob", "--batch-size", "2"])
    assert rc == 0
    (skipped,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert "broken.png" in skipped and "\n" not in skipped  # one line, mammoseg's log: no Python warning
    preds = read_csv(out / "predictions.csv")
    assert [r["id"] for r in preds] == ["img0", "img1", "img2"]
    assert all(r["grid"] == "prepared" and r["height"] == "64" and r["mask"] == f"masks/{r['id']}.png" for r in preds)
    errors = read_csv(out / "errors.csv")
    assert len(errors) == 1 and errors[0]["input"].endswith("broken.png")

    # Known answer, computed here: the mean of the two folds' sigmoid outputs, each with its norm.
    models = [load_fold_model(p) for p in sorted(tiny_run.glob("fold*/best.pt"))]
    for r in preds:
        image = read_png(data / "images" / f"{r['id']}.png").astype(np.float32) / 65535.0
        x = torch.from_numpy(image)[None, None]
        with torch.no_grad():
            probs = [torch.sigmoid(m(((x - c["norm"]["mean"]) / c["norm"]["std"])))[0, 0].numpy() for m, c in models]
        expected = np.mean(probs, axis=0)
        got_prob = read_png(out / "prob" / f"{r['id']}.png").astype(np.float64) / 65535.0
        np.testing.assert_allclose(got_prob, expected, atol=1e-4)
        mask = read_png(out / "masks" / f"{r['id']}.png")
        sure = np.abs(expected - 0.5) > 1e-4
        np.testing.assert_array_equal(mask[sure], np.where(expected[sure] >= 0.5, 255, 0))
        overlay = read_png(out / "overlays" / f"{r['id']}.png")  # read_png gives grey; check it exists
        assert overlay.shape == (64, 64)

    # A second run into the same folder is refused, then allowed with --overwrite; --split filters.
    assert main(["predict", "--device", "cpu", "--run", str(tiny_run), "--input", str(data), "--out", str(out)]) == 2
    assert main(["predict", "--device", "cpu", "--run", str(tiny_run), "--input", str(data), "--out", str(out), "--overwrite", "--split", "holdout"]) == 0
    assert [r["id"] for r in read_csv(out / "predictions.csv")] == ["img1", "img2"]
    assert not (out / "prob").exists()


def test_predict_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    from mammoseg.cli import main

    (tmp_path / "run" / "fold0").mkdir(parents=True)
    assert main(["predict", "--run", str(tmp_path / "run"), "--input", str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert "no fold*/best.pt" in capsys.readouterr().err


def test_predict_command_on_dicom_with_seg(tmp_path, tiny_run, caplog):
    pytest.importorskip("highdicom")
    from mammoseg.cli import main

    src = tmp_path / "dicoms"
    src.mkdir()
    pixels, _ = phantom(120, 90, "left", (40, 30, 10))
    ds = write_mg(src / "a.dcm", pixels)
    (src / "b.dcm").write_bytes(b"garbage, not DICOM")
    out = tmp_path / "pred"
    rc = main(["predict", "--device", "cpu", "--run", str(tiny_run), "--input", str(src), "--out", str(out), "--dicom-seg"])
    assert rc == 0
    assert "b.dcm" in caplog.text
    (row,) = read_csv(out / "predictions.csv")
    assert (row["id"], row["grid"], row["height"], row["width"]) == ("a", "original", "120", "90")
    mask = read_png(out / "masks" / "a.png")
    seg = pydicom.dcmread(out / "seg" / "a.dcm")
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask > 0)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert [e["input"].endswith("b.dcm") for e in read_csv(out / "errors.csv")] == [True]
    # A local SEG carries the same identity as one stored over DICOMweb: run name, run id, threshold.
    from mammoseg.dicom.seg import SegIdentity, seg_identity
    from mammoseg.inference.run_identity import run_id

    summary = json.loads((out / "predict.json").read_text())
    expected = SegIdentity(tiny_run.resolve().name, run_id(tiny_run), 0.5)
    assert summary["run_id"] == expected.run_id
    assert summary["seg_identity"] == {"run_name": expected.run_name, "run_id": expected.run_id, "threshold": 0.5}
    assert seg_identity(seg) == expected
    assert seg.SeriesDescription == f"mammoseg {expected.run_name} mass t=0.5"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmParameters == f"run_id={expected.run_id},threshold=0.5"


def test_collect_inputs_kinds_ids_and_errors(tmp_path):
    data, _ = _prepared(tmp_path)
    # A source folder whose manifest.csv is not a prepared one is searched for DICOMs instead.
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    (src / "manifest.csv").write_text("image,mask,patient_id\n")
    pixels, _ = phantom(80, 60, "left", (30, 20, 8))
    write_mg(src / "a.dcm", pixels)
    write_mg(src / "x" / "a.dcm", pixels)
    (src / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    items, errors = collect_inputs([data, src, tmp_path / "missing.dcm", tmp_path / "empty"], split="holdout")
    assert [(i.id, i.kind) for i in items] == [
        ("img1", "prepared"), ("img2", "prepared"), ("broken", "prepared"), ("a", "dicom"), ("a_2", "dicom")
    ]
    assert [e.reason for e in errors] == ["no such file or folder",
                                           "folder has no manifest.csv, no DICOM files and no PNG/TIFF images"]
    with pytest.raises(ValueError, match="unknown split"):
        collect_inputs([data], split="test")


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("shape,chest,size", [((300, 170), "left", 96), ((150, 260), "right", 64), ((97, 97), "left", 128)])
def test_dicom_given_directly_reaches_the_models_exactly_as_after_prepare(tmp_path, shape, chest, size, crop):
    """One standardisation for prepare and predict: the same DICOM gives a bit-identical model input,
    with the breast crop and without."""
    from mammoseg.geometry import PadResize
    from mammoseg.prepare import PrepareOptions, prepare_dataset

    pixels, _ = phantom(*shape, chest, (shape[0] // 3, shape[1] // 3, 12))
    dicom = write_mg(tmp_path / "src" / "mg.dcm", pixels, "L" if chest == "left" else "R")
    (tmp_path / "src" / "cases.csv").write_text("image,mask,patient_id\nmg.dcm,,P7\n")
    prepare_dataset("manifest", tmp_path / "src" / "cases.csv", tmp_path / "prep",
                    PrepareOptions(size=size, holdout=0, progress=False, crop=crop))

    (direct,), _ = collect_inputs([tmp_path / "src" / "mg.dcm"])
    (prepared,), _ = collect_inputs([tmp_path / "prep"])
    a, b = load_item(direct, size, crop=crop), load_item(prepared, size)
    assert a.plan.cropped == crop
    assert a.model_input.dtype == b.model_input.dtype == np.uint16
    np.testing.assert_array_equal(a.model_input, b.model_input)
    assert a.plan == PadResize.from_row(prepared.row)
    assert dicom.SOPInstanceUID == prepared.row["sop_instance_uid"]


@pytest.mark.parametrize("suffix,bits", [(".png", 8), (".png", 16), (".tif", 16)])
def test_a_raster_mammogram_is_predicted_exactly_as_after_prepare(tmp_path, suffix, bits):
    """PNG/TIFF mammograms (8- and 16-bit) reach the models bit-identical to their prepared image."""
    from mammoseg.geometry import PadResize
    from mammoseg.prepare import PrepareOptions, prepare_dataset

    pixels, _ = phantom(150, 110, "right", (50, 60, 10))
    image = (pixels // 16).astype(np.uint8) if bits == 8 else (pixels * 16).astype(np.uint16)
    path = tmp_path / "src" / f"mg{suffix}"
    path.parent.mkdir()
    assert cv2.imwrite(str(path), image)
    (tmp_path / "src" / "cases.csv").write_text(f"image,mask,patient_id\nmg{suffix},,P7\n")
    prepare_dataset("manifest", tmp_path / "src" / "cases.csv", tmp_path / "prep",
                    PrepareOptions(size=64, holdout=0, progress=False))  # with the breast crop, the default
    (direct,), _ = collect_inputs([path])
    (prepared,), _ = collect_inputs([tmp_path / "prep"])
    assert direct.kind == "raster"
    a, b = load_item(direct, 64, crop=True), load_item(prepared, 64)
    assert a.plan.cropped
    np.testing.assert_array_equal(a.model_input, b.model_input)
    assert a.plan == PadResize.from_row(prepared.row)
    assert a.display.shape == image.shape and a.display.dtype == np.uint16


def test_predict_command_on_a_folder_of_pngs_writes_masks_on_their_own_grid(tmp_path, tiny_run):
    from mammoseg.cli import main

    folder = tmp_path / "pngs"
    folder.mkdir()
    shapes = {"a": (120, 90), "b": (100, 140)}
    for name, (h, w) in shapes.items():
        pixels, _ = phantom(h, w, "left", (h // 2, w // 4, 8))
        assert cv2.imwrite(str(folder / f"{name}.png"), (pixels * 16).astype(np.uint16))
    out = tmp_path / "pred"
    assert main(["predict", "--device", "cpu", "--run", str(tiny_run), "--input", str(folder), "--out", str(out),
                 "--no-progress"]) == 0
    rows = {r["id"]: r for r in read_csv(out / "predictions.csv")}
    assert sorted(rows) == ["a", "b"]
    for name, shape in shapes.items():
        assert rows[name]["grid"] == "original"
        assert read_png(out / rows[name]["mask"]).shape == shape


def test_single_component_patient_names_pass_silently_and_unchanged(tmp_path, tiny_run):
    """CBIS-DDSM names its patients `Mass-Test_P_00820_RIGHT_MLO`: highdicom's multi-line warning about
    such names is not printed (once per image, between progress lines), and the name is copied as is."""
    name = "Mass-Test_P_00820_RIGHT_MLO"
    pixels, _ = phantom(90, 70, "right", (40, 50, 8))
    ds = mg_dataset(pixels.astype(np.uint16), bits_stored=12, PatientName=name, PatientID=name,
                    StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(), ImageLaterality="R",
                    ViewPosition="MLO", WindowCenter=2048, WindowWidth=4096)
    save_dataset(ds, tmp_path / "in" / "mg.dcm")
    out = tmp_path / "pred"
    proc = subprocess.run([sys.executable, "-m", "mammoseg", "predict", "--run", str(tiny_run), "--input",
                           str(tmp_path / "in"), "--out", str(out), "--dicom-seg", "--device", "cpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "person name" not in proc.stderr, proc.stderr
    seg = pydicom.dcmread(out / "seg" / "mg.dcm")
    assert str(seg.PatientName) == name and seg.PatientID == name


def test_the_ensemble_knows_whether_its_folds_were_trained_on_cropped_images(tmp_path):
    from mammoseg.inference.ensemble import load_ensemble
    from mammoseg.manifest import is_cropped

    assert load_ensemble(write_random_run(tmp_path / "old")).breast_crop is False  # no key: trained before the crop
    assert load_ensemble(write_random_run(tmp_path / "cropped", breast_crop=(0, 1))).breast_crop is True
    with pytest.raises(ValueError, match=r"disagree on the breast crop: .*fold0.*uncropped images: .*fold1"):
        load_ensemble(write_random_run(tmp_path / "mixed", breast_crop=(0,)))
    # training reads it from the prepared folder's manifest: the crop columns are there or not
    assert is_cropped([{"id": "a", "crop_top": "0", "crop_bottom": "0", "crop_left": "0", "crop_right": "3"}])
    assert not is_cropped([{"id": "a", "pad_top": "0"}]) and not is_cropped([])


def test_predict_crops_a_dicom_when_the_folds_were_trained_on_cropped_images(tmp_path):
    from mammoseg.inference.predict import PredictOptions, predict
    from mammoseg.layouts import PredictionLayout

    pixels, _ = phantom(150, 110, "right", (60, 80, 10))
    write_mg(tmp_path / "mg.dcm", pixels, "R")
    run = write_random_run(tmp_path / "run", breast_crop=(0, 1))
    predict(run, [tmp_path / "mg.dcm"], tmp_path / "pred", PredictOptions(device="cpu", progress=False))
    summary = json.loads(PredictionLayout(tmp_path / "pred").summary.read_text())
    assert summary["breast_crop"] is True and summary["n_predicted"] == 1
    assert read_png(tmp_path / "pred" / "masks" / "mg.png").shape == (150, 110)  # the original grid
    plain = write_random_run(tmp_path / "plain")
    predict(plain, [tmp_path / "mg.dcm"], tmp_path / "pred2", PredictOptions(device="cpu", progress=False))
    assert "breast_crop" not in json.loads(PredictionLayout(tmp_path / "pred2").summary.read_text())


def test_predicting_a_prepared_folder_made_the_other_way_than_the_run_is_said(tmp_path, caplog):
    """A prepared folder is predicted as it is; when its images were (not) cut to the breast and the
    run's models were trained the other way, predict says so, naming the folder and the fix."""
    from mammoseg.inference.inputs import crop_mismatch
    from mammoseg.inference.predict import PredictOptions, predict

    data, _rows = _prepared(tmp_path)  # the uncropped layout: no crop columns
    assert crop_mismatch(data, breast_crop=False) is None
    assert crop_mismatch(tmp_path / "nothing-here", breast_crop=True) is None
    run = write_random_run(tmp_path / "run", breast_crop=(0, 1))
    with caplog.at_level("WARNING"):
        predict(run, [data], tmp_path / "pred", PredictOptions(device="cpu", progress=False))
    warned = [r.getMessage() for r in caplog.records if "breast crop" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{data}: prepared without the breast crop")
    assert "--crop" in warned[0]
    plain = write_random_run(tmp_path / "plain")
    caplog.clear()
    with caplog.at_level("WARNING"):
        predict(plain, [data], tmp_path / "pred2", PredictOptions(device="cpu", progress=False))
    assert not [r for r in caplog.records if "breast crop" in r.getMessage()]
