"""`mammoseg predict --dicomweb ... --store` against a real Orthanc (DICOMweb plugin, basic auth, 127.0.0.1).

Synthetic studies (For Presentation and For Processing mammograms, an annotation SEG, a
secondary capture, a mammogram too thin to read) are stored through Orthanc's own REST API;
predict runs for real through the command line with credentials from the environment, with a
random-weight two-fold run. The stored SEGs are retrieved back and checked: the image they
reference, their pixels against the local mask, dciodvfy, and that a rerun stores nothing new.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

pytest.importorskip("dicomweb_client")
pytest.importorskip("highdicom")

from dicom_factory import annotation_seg, mg_dataset  # noqa: E402
from dicom_validator import assert_conformant  # noqa: E402
from mammoseg.cli import main  # noqa: E402
from mammoseg.dicom.codes import MG_FOR_PRESENTATION, MG_FOR_PROCESSING  # noqa: E402
from mammoseg.dicom.seg import SegIdentity, referenced_instances, seg_identity  # noqa: E402
from mammoseg.dicomweb import DicomWeb, InstanceRef, cache_path  # noqa: E402
from mammoseg.io import read_csv, read_png  # noqa: E402
from mammoseg.dicomweb.source import DicomWebSource  # noqa: E402
from mammoseg.inference.dicomweb import DicomWebJob, Selection, instance_url, predict_instances, store_segs  # noqa: E402
from mammoseg.inference.predict import PredictOptions  # noqa: E402
from mammoseg.inference.run_identity import run_id, run_identity  # noqa: E402
from mammoseg.sources.synthetic import write_synthetic_dataset  # noqa: E402
from orthanc_server import PASSWORD, USER, free_port, start_orthanc  # noqa: E402
from run_factory import write_random_run  # noqa: E402

SHAPE = (160, 128)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
FOR_PROCESSING_REASON = "a For Processing (raw) mammogram; mammoseg segments For Presentation images"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_random_run(tmp_path_factory.mktemp("runs") / "tiny-run")


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("MAMMOSEG_DICOMWEB_USER", USER)
    monkeypatch.setenv("MAMMOSEG_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.delenv("MAMMOSEG_DICOMWEB_TOKEN", raising=False)


@dataclass
class Study:
    """A study stored in Orthanc: its UID, patient, and the SOP Instance UIDs of each kind of object."""

    uid: str
    patient_id: str
    presentation: dict[str, Dataset] = field(default_factory=dict)  # For Presentation MG: what is segmented
    processing: list[str] = field(default_factory=list)
    others: dict[str, str] = field(default_factory=dict)  # SOP UID -> the reason it is skipped


def _store(orthanc, ds: Dataset, folder: Path) -> None:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    orthanc.upload(path)


def _upload_study(orthanc, folder: Path, seed: int, patient_id: str) -> Study:
    """Two synthetic patients' mammograms as one study of `patient_id` (For Presentation and For Processing)."""
    summary = write_synthetic_dataset(folder / "synth", patients=2, fmt="manifest", shape=SHAPE, seed=seed,
                                      progress=False)
    study = Study(generate_uid(), patient_id)
    (folder / "upload").mkdir()
    for path in summary.images:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.PatientID, ds.PatientName = study.uid, patient_id, f"Phantom^{patient_id}"
        _store(orthanc, ds, folder / "upload")
        if ds.SOPClassUID == MG_FOR_PRESENTATION:
            study.presentation[str(ds.SOPInstanceUID)] = ds
        else:
            assert ds.SOPClassUID == MG_FOR_PROCESSING
            study.processing.append(str(ds.SOPInstanceUID))
    assert len(study.presentation) >= 2 and study.processing, "the synthetic study needs both kinds of mammogram"
    return study


def _add_seg_and_secondary_capture(orthanc, study: Study, folder: Path) -> None:
    """An annotation SEG of the first mammogram and a secondary capture (Modality OT) in the same study."""
    source = next(iter(study.presentation.values()))
    mass = np.zeros(SHAPE, dtype=bool)
    mass[40:70, 30:60] = True
    seg = annotation_seg(source, {"Mass": mass})
    _store(orthanc, seg, folder / "upload")
    study.others[str(seg.SOPInstanceUID)] = "a segmentation (SEG), not an image"
    capture = mg_dataset(np.full((32, 32), 100, np.uint16), StudyInstanceUID=study.uid, PatientID=study.patient_id,
                         SeriesInstanceUID=generate_uid(), SOPClassUID=SECONDARY_CAPTURE, Modality="OT")
    capture.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    _store(orthanc, capture, folder / "upload")
    study.others[str(capture.SOPInstanceUID)] = "modality OT, not MG"


def _server_segs(orthanc, study: Study) -> set[str]:
    """SOP Instance UIDs of the study's SEGs, asked of Orthanc's own REST API (not of the code under test)."""
    found = orthanc.rest("POST", "/tools/find", json={"Level": "Instance", "Expand": True,
                                                      "Query": {"StudyInstanceUID": study.uid, "Modality": "SEG"}})
    return {item["MainDicomTags"]["SOPInstanceUID"] for item in found.json()}


def _predict(orthanc, run: Path, out: Path, cache: Path, *args: str) -> int:
    return main(["predict", "--device", "cpu", "--run", str(run), "--dicomweb", orthanc.dicomweb_url, "--out",
                 str(out), "--cache", str(cache), *args])


def _stored(out: Path) -> dict[str, dict[str, str]]:
    return {row["source_sop_instance_uid"]: row for row in read_csv(out / "stored.csv")}


def _check_stored_seg(orthanc, study: Study, out: Path, uid: str, seg_uid: str, identity: SegIdentity) -> None:
    """The SEG on the server: it references image `uid`, equals the local mask pixel for pixel, passes dciodvfy."""
    local = pydicom.dcmread(out / "seg" / f"{uid}.dcm", stop_before_pixels=True)
    ref = InstanceRef(study.uid, str(local.SeriesInstanceUID), seg_uid)
    with DicomWeb(orthanc.dicomweb_url, retries=1) as web:
        path = web.retrieve(ref, out.parent / "retrieved")
    seg = pydicom.dcmread(path)
    assert referenced_instances(seg) == {uid} and seg.StudyInstanceUID == study.uid
    mask = read_png(out / "masks" / f"{uid}.png")
    assert mask.shape == SHAPE == (seg.Rows, seg.Columns)
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask > 0)
    assert seg_identity(seg) == identity
    assert_conformant(path)


def test_store_sends_each_seg_once_per_image_run_and_threshold(orthanc, run, tmp_path, credentials):
    study = _upload_study(orthanc, tmp_path, seed=3, patient_id="PACS-STORE")
    _add_seg_and_secondary_capture(orthanc, study, tmp_path)
    annotations = _server_segs(orthanc, study)
    cache, first = tmp_path / "cache", tmp_path / "pred1"

    assert _predict(orthanc, run, first, cache, "--study", study.uid, "--store") == 0
    assert sorted(r["id"] for r in read_csv(first / "predictions.csv")) == sorted(study.presentation)
    skipped = {r["sop_instance_uid"]: r["reason"] for r in read_csv(first / "skipped.csv")}
    assert skipped == {**study.others, **dict.fromkeys(study.processing, FOR_PROCESSING_REASON)}
    assert read_csv(first / "errors.csv") == []
    identity = SegIdentity("tiny-run", run_id(run), 0.5)
    summary = json.loads((first / "predict.json").read_text())
    assert (summary["run_name"], summary["run_id"]) == ("tiny-run", identity.run_id)
    assert {k: summary["dicomweb"][k] for k in ("n_mammograms", "n_skipped", "n_stored", "n_failed")} == {
        "n_mammograms": len(study.presentation), "n_skipped": len(skipped), "n_stored": len(study.presentation),
        "n_failed": 0}
    stored = _stored(first)
    assert set(stored) == set(study.presentation)
    masks = [read_png(first / "masks" / f"{uid}.png") for uid in stored]
    assert any(m.any() for m in masks) and not all(m.all() for m in masks), "masks too uniform to test the pixels"
    for uid, row in stored.items():
        local_seg = pydicom.dcmread(first / "seg" / f"{uid}.dcm", stop_before_pixels=True)
        assert (row["outcome"], row["seg_sop_instance_uid"], row["study_instance_uid"]) == (
            "stored", local_seg.SOPInstanceUID, study.uid)
        _check_stored_seg(orthanc, study, first, uid, row["seg_sop_instance_uid"], identity)
    segs = _server_segs(orthanc, study)
    assert segs == annotations | {row["seg_sop_instance_uid"] for row in stored.values()}

    # The same command again (into the same folder): everything is found on the server, nothing is stored.
    assert _predict(orthanc, run, first, cache, "--study", study.uid, "--store", "--overwrite") == 0
    again = _stored(first)
    assert {uid: (r["outcome"], r["seg_sop_instance_uid"]) for uid, r in again.items()} == {
        uid: ("already stored", r["seg_sop_instance_uid"]) for uid, r in stored.items()}
    assert _server_segs(orthanc, study) == segs

    # --force stores anew; another threshold is another prediction.
    assert _predict(orthanc, run, tmp_path / "pred3", cache, "--study", study.uid, "--store", "--force") == 0
    forced = _stored(tmp_path / "pred3")
    assert {r["outcome"] for r in forced.values()} == {"stored"}
    assert _server_segs(orthanc, study) == segs | {r["seg_sop_instance_uid"] for r in forced.values()}
    assert len(_server_segs(orthanc, study)) == len(segs) + len(study.presentation)
    segs = _server_segs(orthanc, study)
    out = tmp_path / "pred4"
    assert _predict(orthanc, run, out, cache, "--study", study.uid, "--store", "--threshold", "0.45") == 0
    other = _stored(out)
    assert {r["outcome"] for r in other.values()} == {"stored"}
    assert _server_segs(orthanc, study) == segs | {r["seg_sop_instance_uid"] for r in other.values()}
    uid = next(iter(other))
    _check_stored_seg(orthanc, study, out, uid, other[uid]["seg_sop_instance_uid"], SegIdentity("tiny-run",
                                                                                               identity.run_id, 0.45))


def test_query_finds_the_instances_the_study_uid_does(orthanc, run, tmp_path, credentials):
    study = _upload_study(orthanc, tmp_path, seed=5, patient_id="PACS-QUERY")
    cache = tmp_path / "cache"
    assert _predict(orthanc, run, tmp_path / "by-uid", cache, "--study", study.uid) == 0
    assert _predict(orthanc, run, tmp_path / "by-query", cache, "--query", "ModalitiesInStudy=MG",
                    "--query", f"PatientID={study.patient_id}") == 0
    by_uid, by_query = (read_csv(tmp_path / name / "predictions.csv") for name in ("by-uid", "by-query"))
    assert sorted(r["id"] for r in by_query) == sorted(r["id"] for r in by_uid) == sorted(study.presentation)
    for row in by_query:
        np.testing.assert_array_equal(read_png(tmp_path / "by-query" / row["mask"]),
                                      read_png(tmp_path / "by-uid" / row["mask"]))
    assert read_csv(tmp_path / "by-query" / "skipped.csv") == read_csv(tmp_path / "by-uid" / "skipped.csv")
    summary = json.loads((tmp_path / "by-query" / "predict.json").read_text())["dicomweb"]
    assert summary["query"] == {"ModalitiesInStudy": "MG", "PatientID": study.patient_id}
    assert summary["studies"] == [study.uid] and summary["store"] is False
    assert not (tmp_path / "by-query" / "stored.csv").exists()  # nothing sent without --store
    assert _server_segs(orthanc, study) == set()


def test_wrong_password_is_one_line_naming_the_server(orthanc, run, tmp_path, credentials, monkeypatch, capsys):
    monkeypatch.setenv("MAMMOSEG_DICOMWEB_PASSWORD", "wrong")
    out = tmp_path / "pred"
    assert _predict(orthanc, run, out, tmp_path / "cache", "--query", "ModalitiesInStudy=MG", "--store") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == ""
    assert lines[0].startswith(f"mammoseg predict: error: {orthanc.dicomweb_url}: authentication failed")
    assert not out.exists() and not (tmp_path / "cache").exists()  # refused before anything was written


def _thin_mammogram(study: Study) -> Dataset:
    """A For Presentation MG 1 x 12000 pixels: QIDO says mammogram, the reader's header checks refuse it."""
    return mg_dataset(np.full((1, 12000), 2000, np.uint16), bits_stored=12, StudyInstanceUID=study.uid,
                      PatientID=study.patient_id, SeriesInstanceUID=generate_uid(), WindowCenter=2048,
                      WindowWidth=4096)


def test_an_unreadable_mammogram_is_listed_and_the_rest_stored(orthanc, run, tmp_path, credentials, caplog):
    study = _upload_study(orthanc, tmp_path, seed=7, patient_id="PACS-THIN")
    thin = _thin_mammogram(study)
    _store(orthanc, thin, tmp_path / "upload")
    out = tmp_path / "pred"
    assert _predict(orthanc, run, out, tmp_path / "cache", "--study", study.uid, "--store") == 1
    assert str(thin.SOPInstanceUID) in caplog.text  # named in mammoseg's log
    (error,) = read_csv(out / "errors.csv")
    assert Path(error["input"]).name == f"{thin.SOPInstanceUID}.dcm"
    assert "aspect ratio" in error["reason"], error["reason"]
    assert sorted(r["id"] for r in read_csv(out / "predictions.csv")) == sorted(study.presentation)
    stored = _stored(out)
    assert set(stored) == set(study.presentation) and {r["outcome"] for r in stored.values()} == {"stored"}
    assert _server_segs(orthanc, study) == {r["seg_sop_instance_uid"] for r in stored.values()}
    assert json.loads((out / "predict.json").read_text())["dicomweb"]["n_failed"] == 1


def _options(run) -> PredictOptions:
    return PredictOptions(seg_identity=run_identity(run, 0.5), device="cpu", progress=False)


def test_a_failed_download_is_listed_and_the_rest_stored(orthanc, run, tmp_path, credentials):
    study = _upload_study(orthanc, tmp_path, seed=9, patient_id="PACS-GONE")
    out = tmp_path / "pred"
    with DicomWeb(orthanc.dicomweb_url, retries=1, backoff=0.01) as web:
        refs = web.search_instances([study.uid])
        gone = InstanceRef(study.uid, refs[0].series_uid, "1.2.3.999", MG_FOR_PRESENTATION, "MG")
        job = DicomWebJob(DicomWebSource(web.url, tmp_path / "cache", (study.uid,)), store=True)
        summary = predict_instances(web, [*refs, gone], run, out, job, _options(run))
    gone_url = instance_url(orthanc.dicomweb_url, gone)
    assert read_csv(out / "errors.csv") == [{"input": gone_url, "reason": f"{gone_url}: not found (HTTP 404)"}]
    assert sorted(_stored(out)) == sorted(r["id"] for r in read_csv(out / "predictions.csv")) == sorted(
        study.presentation)
    assert summary["dicomweb"]["n_fetch_failed"] == summary["dicomweb"]["n_failed"] == 1
    assert summary["n_errors"] == 1 and len(_server_segs(orthanc, study)) == len(study.presentation)


def test_a_server_failure_while_storing_stops_the_rest_and_says_why(orthanc, run, tmp_path, credentials):
    study = _upload_study(orthanc, tmp_path, seed=11, patient_id="PACS-DOWN")
    out, cache = tmp_path / "pred", tmp_path / "cache"
    with DicomWeb(orthanc.dicomweb_url, retries=1) as web:
        refs = [r for r in web.search_instances([study.uid]) if r.sop_uid in study.presentation]
        predict_instances(web, refs, run, out, DicomWebJob(DicomWebSource(web.url, cache, (study.uid,))), _options(run))
    selection = Selection(refs={r.sop_uid: r for r in refs}, files={r.sop_uid: cache_path(cache, r) for r in refs})
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"  # the server went away after predicting
    with DicomWeb(dead, retries=1, backoff=0.01, timeout=2) as web:
        rows = store_segs(web, out, selection, run_identity(run, 0.5), force=False)
    assert [r["outcome"] for r in rows] == ["failed"] * len(study.presentation)
    first = rows[0]["reason"]
    assert first.startswith(f"{dead} study {study.uid}: cannot reach the server after 1 retries"), first
    assert [r["reason"] for r in rows[1:]] == [f"not tried after a server failure: {first}"] * (len(rows) - 1)
    assert _server_segs(orthanc, study) == set()


def test_bad_arguments_are_refused_before_any_work(orthanc, run, tmp_path, credentials, capsys):
    study = "1.2.3.4"
    assert _predict(orthanc, run, tmp_path / "p", tmp_path / "c", "--study", study, "--force") == 2
    assert "--force applies with --store only" in capsys.readouterr().err
    assert _predict(orthanc, run, tmp_path / "p", tmp_path / "c") == 2
    assert "give the studies with --study UID and/or --query KEY=VALUE" in capsys.readouterr().err
    assert _predict(orthanc, run, tmp_path / "p", tmp_path / "c", "--study", study, "--threshold", "1") == 2
    assert "threshold must be in (0, 1)" in capsys.readouterr().err
    assert _predict(orthanc, run, tmp_path / "p", tmp_path / "p" / "cache", "--study", study) == 2
    assert "the output folder contains the input" in capsys.readouterr().err
    assert main(["predict", "--run", str(run), "--input", str(tmp_path), "--out", str(tmp_path / "q"),
                 "--store"]) == 2
    assert "--store: only with --dicomweb" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--run", str(run), "--input", str(tmp_path), "--dicomweb", orthanc.dicomweb_url,
              "--out", str(tmp_path / "q")])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_run_id_is_a_digest_of_the_fold_checkpoints(tmp_path):
    original = write_random_run(tmp_path / "a")
    expected = hashlib.sha256()
    for fold in (0, 1):
        best = original / f"fold{fold}" / "best.pt"
        expected.update(f"fold{fold}".encode() + b"\0" + hashlib.sha256(best.read_bytes()).digest())
    assert run_id(original) == expected.hexdigest()[:16]
    copy = shutil.copytree(original, tmp_path / "renamed")
    assert run_identity(copy, 0.5) == SegIdentity("renamed", run_id(original), 0.5)  # same models, same id
    retrained = write_random_run(tmp_path / "b", folds=(0, 2))
    assert run_id(retrained) != run_id(original)
    with pytest.raises(FileNotFoundError, match="no fold"):
        run_id(tmp_path)


def _server_srs(orthanc, study: Study, folder: Path) -> dict[str, Path]:
    """The study's SRs, by SOP Instance UID, downloaded through Orthanc's own REST API into `folder`."""
    found = orthanc.rest("POST", "/tools/find", json={"Level": "Instance", "Expand": True,
                                                      "Query": {"StudyInstanceUID": study.uid, "Modality": "SR"}})
    folder.mkdir(parents=True, exist_ok=True)
    srs = {}
    for item in found.json():
        uid = item["MainDicomTags"]["SOPInstanceUID"]
        srs[uid] = folder / f"{uid}.dcm"
        srs[uid].write_bytes(orthanc.rest("GET", f"/instances/{item['ID']}/file").content)
    return srs


def _check_server_sr(path: Path, image_uid: str, seg_uid: str, identity: SegIdentity) -> None:
    """An SR on the server: highdicom reads its Measurement Report, it records the run and threshold, and its
    image group and mass groups reference the image and the SEG the server holds."""
    import highdicom as hd

    from mammoseg.dicom.sr import sr_identity, sr_references

    sr = hd.sr.srread(path)
    report = hd.sr.MeasurementReport.from_sequence([sr])
    assert sr_identity(sr) == identity
    assert sr_references(sr) == {image_uid, seg_uid}
    (image_group,) = report.get_image_measurement_groups()
    assert image_group.source_images[0].referenced_sop_instance_uid == image_uid
    for group in report.get_planar_roi_measurement_groups():
        assert group.referenced_segmentation_frame.referenced_sop_instance_uid == seg_uid


@pytest.mark.timeout(120)
def test_store_sends_each_sr_beside_its_seg_once_per_image_run_and_threshold(orthanc, run, tmp_path, credentials,
                                                                              capsys):
    study = _upload_study(orthanc, tmp_path, seed=13, patient_id="PACS-SR")
    cache, first = tmp_path / "cache", tmp_path / "pred1"
    identity = SegIdentity("tiny-run", run_id(run), 0.5)

    assert _predict(orthanc, run, first, cache, "--study", study.uid, "--store") == 0
    assert f"SRs: {len(study.presentation)} stored, 0 already stored, 0 failed" in capsys.readouterr().out
    stored = _stored(first)
    assert set(stored) == set(study.presentation)
    srs = _server_srs(orthanc, study, tmp_path / "server1")
    for uid, row in stored.items():
        local_sr = pydicom.dcmread(first / "sr" / f"{uid}.dcm")
        assert (row["outcome"], row["sr_outcome"], row["sr_reason"], row["sr_sop_instance_uid"]) == (
            "stored", "stored", "", local_sr.SOPInstanceUID)
        _check_server_sr(srs[row["sr_sop_instance_uid"]], uid, row["seg_sop_instance_uid"], identity)
        assert srs[row["sr_sop_instance_uid"]].read_bytes() == (first / "sr" / f"{uid}.dcm").read_bytes()
    assert set(srs) == {row["sr_sop_instance_uid"] for row in stored.values()}
    web = json.loads((first / "predict.json").read_text())["dicomweb"]
    assert {k: web[k] for k in ("n_sr_stored", "n_sr_already_stored", "n_sr_store_failed", "n_failed")} == {
        "n_sr_stored": len(study.presentation), "n_sr_already_stored": 0, "n_sr_store_failed": 0, "n_failed": 0}

    # Again: the SRs are found on the server by their identity; nothing new is stored.
    assert _predict(orthanc, run, first, cache, "--study", study.uid, "--store", "--overwrite") == 0
    assert f"SRs: 0 stored, {len(study.presentation)} already stored, 0 failed" in capsys.readouterr().out
    again = _stored(first)
    assert {uid: (r["sr_outcome"], r["sr_sop_instance_uid"]) for uid, r in again.items()} == {
        uid: ("already stored", r["sr_sop_instance_uid"]) for uid, r in stored.items()}
    assert set(_server_srs(orthanc, study, tmp_path / "server2")) == set(srs)

    # --force stores new SRs, each beside its new SEG.
    forced_out = tmp_path / "pred3"
    assert _predict(orthanc, run, forced_out, cache, "--study", study.uid, "--store", "--force") == 0
    forced = _stored(forced_out)
    assert {(r["outcome"], r["sr_outcome"]) for r in forced.values()} == {("stored", "stored")}
    after = _server_srs(orthanc, study, tmp_path / "server3")
    assert set(after) == set(srs) | {r["sr_sop_instance_uid"] for r in forced.values()}
    assert len(after) == 2 * len(study.presentation)
    for uid, row in forced.items():
        _check_server_sr(after[row["sr_sop_instance_uid"]], uid, row["seg_sop_instance_uid"], identity)


@pytest.mark.timeout(120)
def test_an_sr_stored_beside_a_seg_stored_before_references_that_seg(orthanc, run, tmp_path, credentials):
    study = _upload_study(orthanc, tmp_path, seed=15, patient_id="PACS-SR-LATE")
    cache, earlier = tmp_path / "cache", tmp_path / "earlier"
    with DicomWeb(orthanc.dicomweb_url, retries=1) as web:  # SEGs stored by a run that wrote no SR
        refs = [r for r in web.search_instances([study.uid]) if r.sop_uid in study.presentation]
        predict_instances(web, refs, run, earlier, DicomWebJob(DicomWebSource(web.url, cache, (study.uid,))),
                          _options(run))
        assert not (earlier / "sr").exists()
        selection = Selection(refs={r.sop_uid: r for r in refs}, files={r.sop_uid: cache_path(cache, r) for r in refs})
        segs = {r["source_sop_instance_uid"]: r for r in store_segs(web, earlier, selection, run_identity(run, 0.5),
                                                                    force=False)}
    assert {(r["outcome"], r["sr_outcome"]) for r in segs.values()} == {("stored", "")}
    assert _server_srs(orthanc, study, tmp_path / "none") == {}

    out = tmp_path / "pred"
    assert _predict(orthanc, run, out, cache, "--study", study.uid, "--store") == 0
    stored = _stored(out)
    srs = _server_srs(orthanc, study, tmp_path / "server")
    identity = SegIdentity("tiny-run", run_id(run), 0.5)
    for uid, row in stored.items():
        assert (row["outcome"], row["sr_outcome"]) == ("already stored", "stored")
        assert row["seg_sop_instance_uid"] == segs[uid]["seg_sop_instance_uid"]
        _check_server_sr(srs[row["sr_sop_instance_uid"]], uid, row["seg_sop_instance_uid"], identity)
        server_seg = pydicom.dcmread(earlier / "seg" / f"{uid}.dcm", stop_before_pixels=True)
        evidence = {s.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in s.ReferencedSOPSequence} for s in
                    pydicom.dcmread(srs[row["sr_sop_instance_uid"]]).CurrentRequestedProcedureEvidenceSequence[0]
                    .ReferencedSeriesSequence}
        assert evidence[server_seg.SeriesInstanceUID] == {server_seg.SOPInstanceUID}
        assert_conformant(srs[row["sr_sop_instance_uid"]])  # made to reference the earlier SEG, still valid
        assert srs[row["sr_sop_instance_uid"]].read_bytes() == (out / "sr" / f"{uid}.dcm").read_bytes()


@pytest.mark.timeout(120)
def test_an_unreadable_sr_file_fails_its_row_and_the_rest_are_stored(orthanc, run, tmp_path, credentials):
    study = _upload_study(orthanc, tmp_path, seed=17, patient_id="PACS-SR-BAD")
    out, cache = tmp_path / "pred", tmp_path / "cache"
    with DicomWeb(orthanc.dicomweb_url, retries=1) as web:
        refs = [r for r in web.search_instances([study.uid]) if r.sop_uid in study.presentation]
        job = DicomWebJob(DicomWebSource(web.url, cache, (study.uid,)))
        predict_instances(web, refs, run, out, job, replace(_options(run), dicom_sr=True))
        broken = refs[0].sop_uid
        (out / "sr" / f"{broken}.dcm").write_bytes(b"not a DICOM file")
        selection = Selection(refs={r.sop_uid: r for r in refs}, files={r.sop_uid: cache_path(cache, r) for r in refs})
        rows = {r["source_sop_instance_uid"]: r for r in store_segs(web, out, selection, run_identity(run, 0.5),
                                                                    force=False)}
    assert {uid: (r["outcome"], r["sr_outcome"]) for uid, r in rows.items()} == {
        uid: ("stored", "failed" if uid == broken else "stored") for uid in study.presentation}
    assert rows[broken]["sr_reason"] == (f"{out / 'sr' / broken}.dcm: not a DICOM file (no 'DICM' marker after the "
                                         "128-byte preamble)")
    assert rows[broken]["sr_sop_instance_uid"] == ""
    srs = _server_srs(orthanc, study, tmp_path / "server")
    assert set(srs) == {r["sr_sop_instance_uid"] for uid, r in rows.items() if uid != broken}
