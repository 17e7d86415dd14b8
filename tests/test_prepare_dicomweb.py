"""`mammoseg prepare --format dicomweb`: a training set pulled from a real Orthanc, masks from its SEGs.

Synthetic studies are stored in Orthanc (through its own REST API), with annotation SEGs
(MANUAL) for one image and a mammoseg prediction SEG (AUTOMATIC) for another; prepare then
runs for real through the command line, and the prepared masks are checked pixel for pixel.
"""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest

pytest.importorskip("dicomweb_client")
pytest.importorskip("highdicom")

from dicom_factory import annotation_seg  # noqa: E402
from mammoseg.cli import main  # noqa: E402
from mammoseg.dicom.codes import MG_FOR_PRESENTATION, MG_FOR_PROCESSING  # noqa: E402
from mammoseg.dicom.seg import SegIdentity, build_dicom_seg  # noqa: E402
from mammoseg.geometry import PadResize, apply_to_mask  # noqa: E402
from mammoseg.io import read_png  # noqa: E402
from mammoseg.sources.synthetic import write_synthetic_dataset  # noqa: E402
from orthanc_server import PASSWORD, USER, start_orthanc  # noqa: E402

SHAPE = (200, 160)
SIZE = 64


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _store(orthanc, ds, path):
    ds.save_as(path, enforce_file_format=True)
    orthanc.upload(path)


def test_prepare_pulls_images_and_seg_masks(orthanc, tmp_path, monkeypatch):
    summary = write_synthetic_dataset(tmp_path / "syn", patients=2, fmt="manifest", shape=SHAPE, seed=21,
                                      progress=False)
    datasets = {p: pydicom.dcmread(p) for p in summary.images}
    for path in summary.images:
        orthanc.upload(path)
    presentation = [p for p, ds in datasets.items() if ds.SOPClassUID == MG_FOR_PRESENTATION]
    processing = {str(ds.SOPInstanceUID) for ds in datasets.values() if ds.SOPClassUID == MG_FOR_PROCESSING}
    assert len(presentation) >= 2 and processing
    annotated, predicted = datasets[presentation[0]], datasets[presentation[1]]

    # Two annotation SEGs on one image: a mass + a calcification cluster, and a second mass. Their masses merge.
    mass = np.zeros(SHAPE, dtype=bool)
    mass[50:90, 10:60] = True
    second = np.zeros(SHAPE, dtype=bool)
    second[150:160, 100:120] = True
    calcification = np.zeros(SHAPE, dtype=bool)
    calcification[20:30, 100:140] = True
    _store(orthanc, annotation_seg(annotated, {"Mass": mass, "Calc": calcification}), tmp_path / "seg1.dcm")
    _store(orthanc, annotation_seg(annotated, {"Mass": second}), tmp_path / "seg2.dcm")
    # A prediction stored back by mammoseg is not a reference mask.
    _store(orthanc, build_dicom_seg(np.ones(SHAPE, bool), predicted, identity=SegIdentity("r", "r1", 0.5)),
           tmp_path / "seg3.dcm")

    monkeypatch.setenv("MAMMOSEG_DICOMWEB_USER", USER)
    monkeypatch.setenv("MAMMOSEG_DICOMWEB_PASSWORD", PASSWORD)
    first_patient_study = str(next(iter(datasets.values())).StudyInstanceUID)
    out, cache = tmp_path / "prepared", tmp_path / "cache"
    code = main(["prepare", "--format", "dicomweb", "--src", orthanc.dicomweb_url, "--study", first_patient_study,
                 "--query", "ModalitiesInStudy=MG", "--query", "PatientID=SYN0002", "--cache", str(cache),
                 "--out", str(out), "--size", str(SIZE), "--no-progress"])
    assert code == 0

    rows = {r["id"]: r for r in _rows(out / "manifest.csv")}
    expected_ids = {str(datasets[p].SOPInstanceUID) for p in presentation}
    assert set(rows) == expected_ids  # every For Presentation image of both patients, nothing else
    errors = {r["id"]: r["reason"] for r in _rows(out / "errors.csv")}
    assert set(errors) == processing
    assert all("skipped, a For Processing (raw) mammogram" in reason for reason in errors.values())

    for path in presentation:
        ds = datasets[path]
        row = rows[str(ds.SOPInstanceUID)]
        assert (row["patient_id"], row["laterality"], row["view"]) == (ds.PatientID, ds.ImageLaterality,
                                                                       ds.ViewPosition)
        assert row["source"] == "dicomweb" and row["src_image"].startswith(str(cache))
        prepared = read_png(out / row["mask"])
        if ds is annotated:
            expected = apply_to_mask((mass | second).astype(np.uint8) * 255, PadResize.from_row(row))
            assert prepared.any() and row["has_mass"] == "1"
            np.testing.assert_array_equal(prepared, expected)
        else:
            assert not prepared.any() and row["has_mass"] == "0", row["id"]  # no SEG, or only a prediction


def test_dicomweb_flags_are_checked_before_any_connection(capsys, tmp_path):
    base = ["prepare", "--src", "http://127.0.0.1:1/dicom-web", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*base, "--format", "manifest", "--study", "1.2.3"]) == 2
    assert "--study apply to --format dicomweb only" in capsys.readouterr().err
    assert main([*base, "--format", "dicomweb", "--cache", str(tmp_path / "c"), "--query", "ModalitiesInStudy"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main([*base, "--format", "dicomweb", "--cache", str(tmp_path / "c")]) == 2
    assert "give the studies with --study UID and/or --query KEY=VALUE" in capsys.readouterr().err
