"""`mammoseg view` of real predictions: DICOM inputs (header facts, areas in mm²) and prepared
folders (the one predict recorded, never a guess).

synth (manifest layout: images/<id>.dcm, masks/<id>.png and a *source* manifest.csv, which
is not a prepared folder) → predict with random-weight folds at 64 px → view.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from prepared_factory import Case, write_prepared
from run_factory import write_random_run
from test_view import load_case_script

from mammoseg.cli import main
from mammoseg.io import read_csv, read_png, write_text_atomic
from mammoseg.sources.synthetic import write_synthetic_dataset
from mammoseg.dicom import read_mammogram
from mammoseg.view import write_view

pytestmark = pytest.mark.timeout(120)


def load_data(out):
    text = (out / "data.js").read_text(encoding="utf-8")
    data = json.loads(text[len("window.MAMMOSEG_VIEW = "):-2])
    data["cases"] = {r[0]: dict(zip(data["columns"], r)) for r in data["rows"]}
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_random_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def dicom_prediction(tmp_path_factory, run):
    """synth/ (2 patients × 4 views, 96×80) and the prediction of its DICOMs."""
    root = tmp_path_factory.mktemp("dicom")
    synth = write_synthetic_dataset(root / "synth", patients=2, fmt="manifest", shape=(96, 80), seed=0,
                                    progress=False)
    pred = root / "pred"
    assert main(["predict", "--device", "cpu", "--no-progress", "--run", str(run), "--input",
                 *map(str, synth.images), "--out", str(pred)]) == 0
    return root / "synth", pred


def test_dicom_prediction_shows_patient_view_side_and_areas_in_mm2(dicom_prediction, capsys):
    synth, pred = dicom_prediction
    assert json.loads((pred / "predict.json").read_text())["data_dirs"] == []  # DICOM files only
    # synth/ has images/, masks/ and a manifest.csv — of a source, not a prepared folder: not guessed
    assert main(["view", str(pred), "--out", str(synth.parent / "site")]) == 0
    data = load_data(synth.parent / "site")
    assert data["folders"]["data"] is None and data["area_unit"] == "mm²"
    rows = read_csv(pred / "predictions.csv")
    assert len(data["cases"]) == len(rows) == 8
    spacings = set()
    for row in rows:
        c, header = data["cases"][row["id"]], pydicom.dcmread(row["input"], stop_before_pixels=True)
        assert (c["patient"], c["view"], c["laterality"]) == (header.PatientID, header.ViewPosition,
                                                              header.ImageLaterality)
        spacing = tuple(float(v) for v in header.PixelSpacing)
        spacings.add(spacing)
        pred_px = int(np.count_nonzero(read_png(pred / row["mask"])))
        assert pred_px > 0 and c["pred_px"] == pred_px and (c["w"], c["h"]) == (80, 96)  # the DICOM's own grid
        assert c["pred_area"] == c["pred_mm2"] == round(pred_px * spacing[0] * spacing[1], 2)
        assert c["ref_area"] is None and c["ref_mm2"] is None and c["outcome"] == ""
        date = str(header.StudyDate)
        assert len(date) == 8 and c["study_date"] == f"{date[:4]}-{date[4:6]}-{date[6:]}"
        assert c["n_masses"] >= 1
    first = load_case_script(synth.parent / "site", rows[0]["id"])
    kind = "DICOM VOI LUT" if "VOILUTSequence" in pydicom.dcmread(rows[0]["input"], stop_before_pixels=True) else "DICOM window"
    assert first["presets"][0] == {"name": kind, "low": 0, "high": 65535}  # the file's window, as predict read it
    assert np.array_equal(first["pixels"], read_mammogram(rows[0]["input"]).pixels)
    assert {c["patient"] for c in data["cases"].values()} == {"SYN0001", "SYN0002"}
    assert {(c["view"], c["laterality"]) for c in data["cases"].values()} == {
        ("CC", "L"), ("CC", "R"), ("MLO", "L"), ("MLO", "R")}
    assert all(s != (1.0, 1.0) for s in spacings)  # real spacings, not a unit that hides a missing factor


def test_dicom_prediction_without_predict_json_is_not_guessed(dicom_prediction, tmp_path):
    synth, pred = dicom_prediction
    copy = tmp_path / "pred"
    shutil.copytree(pred, copy)
    (copy / "predict.json").unlink()  # no record: the DICOM inputs need no prepared folder anyway
    data = load_data(write_view(copy, tmp_path / "site", progress=False).parent)
    assert data["folders"]["data"] is None and len(data["rows"]) == 8
    assert data["cases"]["SYN0002_R_MLO"]["patient"] == "SYN0002"


@pytest.fixture(scope="module")
def prepared_prediction(tmp_path_factory, run):
    """A prepared folder (64 px from a 128×96 original, 0.1 mm pixels except for one image) and its prediction."""
    root = tmp_path_factory.mktemp("prepared")
    plan = {"orig_height": 128, "orig_width": 96, "pad_right": 32, "size": 64}
    cases = []
    for i, spacing in enumerate(("0.1\\0.1", "0.1\\0.1", "")):
        image = np.random.default_rng(i).integers(0, 65535, (64, 64), dtype=np.uint16)
        mask = np.zeros((64, 64), np.uint8)
        mask[10:20 + i, 30:40] = 255
        cases.append(Case(f"img{i}", f"P{i}", image, mask, "holdout",
                          {**plan, "pixel_spacing": spacing, "view": "MLO", "laterality": "R"}))
    write_prepared(root / "data", cases)
    pred = root / "pred"
    assert main(["predict", "--device", "cpu", "--no-progress", "--run", str(run), "--input", str(root / "data"),
                 "--out", str(pred)]) == 0
    return root / "data", pred


def test_prepared_prediction_uses_the_folder_predict_recorded(prepared_prediction, tmp_path):
    data_dir, pred = prepared_prediction
    assert json.loads((pred / "predict.json").read_text())["data_dirs"] == [str(data_dir.resolve())]
    data = load_data(write_view(pred, tmp_path / "site", progress=False).parent)
    assert data["folders"]["data"] == str(data_dir.resolve())
    assert data["area_unit"] == "px"  # img2's spacing is unknown: one unit for the whole column
    for i in range(3):
        c = data["cases"][f"img{i}"]
        assert (c["patient"], c["view"], c["laterality"]) == (f"P{i}", "MLO", "R")
        ref_px = 10 * (10 + i)
        assert (c["ref_area"], c["ref_px"]) == (ref_px, ref_px)
        # prepared pixel = 128/64 original pixels of 0.1 mm a side
        expected = round(ref_px * 0.2 * 0.2, 2) if i < 2 else None
        assert c["ref_mm2"] == expected and (c["pred_mm2"] is None) == (i == 2)


def test_view_asks_for_data_when_the_prediction_does_not_say(prepared_prediction, tmp_path, capsys):
    data_dir, pred = prepared_prediction
    copy = tmp_path / "pred"
    shutil.copytree(pred, copy)
    (copy / "predict.json").unlink()
    assert main(["view", str(copy), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"mammoseg view: error: {copy}: no predict.json says which prepared folder predict read; "
                   "give it with --data")
    assert not (tmp_path / "site").exists()
    assert main(["view", str(copy), "--out", str(tmp_path / "site"), "--data", str(data_dir)]) == 0
    assert load_data(tmp_path / "site")["folders"]["data"] == str(data_dir)

    # two prepared folders read: view cannot pick one
    write_text_atomic(copy / "predict.json", json.dumps({"inputs": [str(data_dir), str(tmp_path)],
                                                         "data_dirs": [str(data_dir), str(tmp_path)]}))
    with pytest.raises(ValueError, match=r"predict read 2 prepared folders .*; give the one to show with --data"):
        write_view(copy, tmp_path / "site2", progress=False)
    # a recorded folder that is gone
    write_text_atomic(copy / "predict.json", json.dumps({"data_dirs": [str(tmp_path / "gone")]}))
    with pytest.raises(FileNotFoundError, match=r"names the prepared folder .*gone, which is not a folder; "
                                                r"give it with --data"):
        write_view(copy, tmp_path / "site3", progress=False)


def test_older_predict_json_names_the_prepared_folder_among_its_inputs(prepared_prediction, tmp_path):
    data_dir, pred = prepared_prediction
    copy = tmp_path / "pred"
    shutil.copytree(pred, copy)
    summary = json.loads((copy / "predict.json").read_text())
    del summary["data_dirs"]  # as predict wrote it before it recorded them
    write_text_atomic(copy / "predict.json", json.dumps(summary))
    data = load_data(write_view(copy, tmp_path / "site", progress=False).parent)
    assert data["folders"]["data"] == str(data_dir.resolve())
