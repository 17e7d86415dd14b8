"""The one-call Python API: `Segmenter` gives the mask `mammoseg predict` writes, byte for byte."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mammoseg import Segmentation, Segmenter
from mammoseg.cli import main
from mammoseg.geometry import standardise
from mammoseg.io import read_csv, read_png

from dicom_factory import textured_breast, write_mg
from run_factory import write_random_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_random_run(tmp_path_factory.mktemp("run"), folds=(0, 1, 2))



@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    for i, (h, w) in enumerate(((150, 110), (97, 130), (200, 90))):
        write_mg(folder / f"mg{i}.dcm", textured_breast(h, w, i), bits_stored=12, PatientID=f"P{i}", WindowCenter=2048,
                 WindowWidth=4096, PixelSpacing=[0.07, 0.065])
    assert cv2.imwrite(str(folder / "film.png"), (textured_breast(120, 100, 9) // 16).astype(np.uint8))
    return folder


def test_the_mask_equals_the_cli_mask_byte_for_byte(run, inputs, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", "--run", str(run), "--input", str(inputs), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--save-prob"]) == 0
    segmenter = Segmenter.from_run(run, device="cpu")
    rows = read_csv(out / "predictions.csv")
    assert sorted(r["id"] for r in rows) == ["film", "mg0", "mg1", "mg2"]
    for row in rows:
        result = segmenter.segment(row["input"])
        assert isinstance(result, Segmentation)
        written = read_png(out / row["mask"])
        assert result.mask.dtype == written.dtype == np.uint8
        assert result.mask.tobytes() == written.tobytes()
        saved_prob = read_png(out / "prob" / f"{row['id']}.png").astype(np.float64) / 65535
        np.testing.assert_allclose(result.probability, saved_prob, atol=1 / 65535)
        assert 0 < int((result.mask > 0).sum()) < result.mask.size  # neither trivially empty nor full


def test_header_spacing_geometry_and_arrays(run, inputs):
    segmenter = Segmenter.from_run(run, device="cpu")
    result = segmenter.segment(inputs / "mg1.dcm")
    assert result.mask.shape == result.probability.shape == (97, 130)
    assert result.spacing == (0.07, 0.065)
    assert result.geometry == standardise(_windowed(inputs / "mg1.dcm"), segmenter.image_size).plan
    assert segmenter.segment(inputs / "film.png").spacing is None
    # An array is segmented as the file it came from would be.
    array = segmenter.segment(_windowed(inputs / "mg1.dcm"))
    assert array.mask.tobytes() == result.mask.tobytes() and array.spacing is None


def _windowed(path):
    from mammoseg.dicom import read_mammogram

    return read_mammogram(path).pixels


def test_a_fold_subset_and_no_autograd(run, inputs):
    every = Segmenter.from_run(run, device="cpu")
    one = Segmenter.from_run(run, device="cpu", folds=[2])
    assert len(one.ensemble.members) == 1 and one.ensemble.members[0].source.endswith("fold2/best.pt")
    assert not np.array_equal(every.segment(inputs / "mg0.dcm").probability,
                              one.segment(inputs / "mg0.dcm").probability)
    with pytest.raises(ValueError, match="fold 7 has no best.pt here"):
        Segmenter.from_run(run, device="cpu", folds=[0, 7])
    torch.set_grad_enabled(True)
    result = one.segment(inputs / "mg0.dcm")  # no graph is kept: the probability is plain numpy
    assert isinstance(result.probability, np.ndarray) and result.probability.dtype == np.float32
