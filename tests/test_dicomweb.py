"""mammoseg.dicomweb against a real Orthanc with its DICOMweb plugin (started on 127.0.0.1 here).

Search (QIDO-RS), retrieve (WADO-RS) into the cache bit for bit, classify, store a SEG
(STOW-RS) and find it again by (source instance, run id, threshold), and the failures a
user meets: a wrong password, a dead port, a missing instance, credentials in the URL.
"""

from __future__ import annotations

import http.server
import json
import logging
import ssl
import subprocess
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("dicomweb_client")
pytest.importorskip("highdicom")

from dicom_validator import assert_conformant  # noqa: E402
from mammoseg.dicom.codes import MG_FOR_PRESENTATION, MG_FOR_PROCESSING  # noqa: E402
from mammoseg.dicom.seg import SegIdentity, build_dicom_seg  # noqa: E402
from mammoseg.dicomweb import DicomWeb, DicomWebError, InstanceRef, classify, instance_url  # noqa: E402
from mammoseg.sources.synthetic import write_synthetic_dataset  # noqa: E402
from orthanc_server import PASSWORD, USER, free_port, start_orthanc  # noqa: E402
from system_tools import require_tool  # noqa: E402

SHAPE = (160, 128)
ENV = {"MAMMOSEG_DICOMWEB_USER": USER, "MAMMOSEG_DICOMWEB_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


def _upload_study(orthanc, folder: Path, seed: int) -> dict[str, Path]:
    """One synthetic patient (4 MG images, one study) stored through Orthanc's own REST API: SOP UID -> file."""
    summary = write_synthetic_dataset(folder, patients=1, fmt="manifest", shape=SHAPE, seed=seed, progress=False)
    files = {}
    for path in summary.images:
        orthanc.upload(path)
        files[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return files


def _client(orthanc, **kwargs) -> DicomWeb:
    return DicomWeb(orthanc.dicomweb_url, env=ENV, retries=1, backoff=0.01, **kwargs)


def test_search_classify_and_retrieve_bit_identical(orthanc, tmp_path):
    files = _upload_study(orthanc, tmp_path / "syn", seed=11)
    headers = {uid: pydicom.dcmread(p, stop_before_pixels=True) for uid, p in files.items()}
    study = next(iter(headers.values())).StudyInstanceUID
    with _client(orthanc) as web:
        by_study = web.search_instances(studies=[study])
        by_query = web.search_instances(query={"ModalitiesInStudy": "MG", "PatientID": "SYN0001", "StudyDate":
                                               f"{headers[next(iter(headers))].StudyDate}-"})
        assert sorted(r.sop_uid for r in by_study) == sorted(files)
        assert {r.sop_uid for r in by_query} >= set(files)
        for ref in by_study:
            assert (ref.study_uid, ref.series_uid) == (study, headers[ref.sop_uid].SeriesInstanceUID)
            verdict = classify(ref.sop_class, ref.modality)
            assert verdict.segment == (headers[ref.sop_uid].SOPClassUID == MG_FOR_PRESENTATION), ref
            if headers[ref.sop_uid].SOPClassUID == MG_FOR_PROCESSING:
                assert "For Processing" in verdict.reason
        fetched = web.fetch(by_study, tmp_path / "cache")
    assert not fetched.failures and set(fetched.files) == set(files)
    for uid, path in fetched.files.items():
        assert path == tmp_path / "cache" / study / headers[uid].SeriesInstanceUID / f"{uid}.dcm"
        assert path.read_bytes() == files[uid].read_bytes()

    # A cached instance is not fetched again: gone from the server, still served from the cache.
    orthanc.rest("DELETE", f"/studies/{orthanc.rest('POST', '/tools/lookup', data=study).json()[0]['ID']}")
    with _client(orthanc) as web:
        again = web.fetch(by_study, tmp_path / "cache")
        assert not again.failures and again.files == fetched.files
        assert not web.fetch(by_study, tmp_path / "other-cache").files  # truly gone from the server


def test_store_seg_find_it_by_identity_and_retrieve_it(orthanc, tmp_path):
    files = _upload_study(orthanc, tmp_path / "syn", seed=12)
    uid, path = next((u, p) for u, p in files.items() if pydicom.dcmread(p).SOPClassUID == MG_FOR_PRESENTATION)
    source = pydicom.dcmread(path)
    mask = np.zeros((source.Rows, source.Columns), dtype=bool)
    mask[30:60, 20:50] = True
    mask[100, 5] = True
    identity = SegIdentity("demo run", "run-7f3a", 0.5)
    seg = build_dicom_seg(mask, source, identity=identity)
    study = str(source.StudyInstanceUID)
    with _client(orthanc) as web:
        assert web.find_seg(study, uid, identity) is None
        assert web.store(seg) == seg.SOPInstanceUID
        found = web.find_seg(study, uid, identity)
        assert found is not None and found.ref.sop_uid == seg.SOPInstanceUID and found.identity == identity
        assert found.references == {uid}
        assert web.find_seg(study, uid, SegIdentity("demo run", "run-7f3a", 0.4)) is None
        assert web.find_seg(study, uid, SegIdentity("demo run", "run-other", 0.5)) is None
        other = next(u for u in files if u != uid)
        assert web.find_seg(study, other, identity) is None
        seg_file = web.retrieve(found.ref, tmp_path / "cache")
    stored = pydicom.dcmread(seg_file)
    np.testing.assert_array_equal(stored.pixel_array.astype(bool), mask)
    assert stored.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == uid
    assert_conformant(seg_file)


def test_wrong_password_is_a_one_line_error_naming_the_server(orthanc):
    env = {**ENV, "MAMMOSEG_DICOMWEB_PASSWORD": "wrong"}
    with DicomWeb(orthanc.dicomweb_url, env=env, retries=1, backoff=0.01) as web, pytest.raises(DicomWebError) as err:
        web.check()
    message = str(err.value)
    assert "\n" not in message and message.startswith(orthanc.dicomweb_url)
    assert "authentication failed: check MAMMOSEG_DICOMWEB_USER/PASSWORD or the netrc file" in message
    assert err.value.fatal


def test_netrc_file_gives_the_credentials(orthanc, tmp_path):
    good = tmp_path / "netrc"
    good.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    good.chmod(0o600)
    with DicomWeb(orthanc.dicomweb_url, env={}, netrc_file=good, retries=1) as web:
        web.check()
        assert web.auth_source == f"netrc file {good}"
    other = tmp_path / "netrc-other"
    other.write_text(f"machine pacs.example.org login {USER} password {PASSWORD}\n")
    with pytest.raises(DicomWebError, match="has no entry for host 127.0.0.1"):
        DicomWeb(orthanc.dicomweb_url, env={}, netrc_file=other)


def test_credentials_in_the_url_are_refused():
    with pytest.raises(DicomWebError, match="credentials in the URL are refused"):
        DicomWeb("http://user:pw@127.0.0.1:1/dicom-web", env={})


def test_dead_port_fails_after_bounded_retries(caplog):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with caplog.at_level(logging.WARNING, logger="urllib3"), DicomWeb(
        url, env={}, retries=2, backoff=0.01, timeout=2
    ) as web, pytest.raises(DicomWebError) as err:
        web.check()
    message = str(err.value)
    assert message.startswith(url) and "cannot reach the server after 2 retries" in message and "\n" not in message
    assert "Connection refused" in message
    assert sum("Retrying" in r.getMessage() for r in caplog.records) == 2  # two retries, then the error


def test_one_missing_instance_is_reported_and_the_rest_fetched(orthanc, tmp_path):
    files = _upload_study(orthanc, tmp_path / "syn", seed=13)
    with _client(orthanc) as web:
        refs = web.search_instances(studies=[pydicom.dcmread(next(iter(files.values()))).StudyInstanceUID])
        missing = InstanceRef(refs[0].study_uid, refs[0].series_uid, "1.2.3.999")
        result = web.fetch([refs[0], missing, *refs[1:]], tmp_path / "cache")
    assert set(result.files) == set(files)
    assert list(result.failures) == ["1.2.3.999"]
    # Named by its WADO-RS URL, which says the server, the study, the series and the instance.
    assert result.failures["1.2.3.999"] == f"{instance_url(orthanc.dicomweb_url, missing)}: not found (HTTP 404)"


def _self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl (PEM files)."""
    openssl = require_tool("openssl", "openssl")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class _EmptyQido(http.server.BaseHTTPRequestHandler):
    """Answers every GET with an empty QIDO result: enough to exercise the TLS handshake."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args: object) -> None:
        pass


def test_tls_is_verified_and_ca_bundle_adds_a_ca(tmp_path):
    # Debian's Orthanc 1.10 crashes on HTTPS connections, so a Python TLS endpoint stands in for it here.
    cert, key = _self_signed_certificate(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyQido)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        with DicomWeb(url, env=ENV, retries=1, backoff=0.01) as web, pytest.raises(DicomWebError) as err:
            web.check()
        assert "TLS certificate verification failed" in str(err.value) and "--ca-bundle" in str(err.value)
        assert err.value.fatal and "\n" not in str(err.value)
        with DicomWeb(url, env=ENV, ca_bundle=cert, retries=1) as web:
            web.check()  # the self-signed certificate, added as a CA, is trusted
            assert web.search_instances(studies=[]) == []
        with pytest.raises(DicomWebError, match="no such file"):
            DicomWeb(url, env=ENV, ca_bundle=tmp_path / "missing.pem")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_store_seg_is_idempotent_per_instance_run_and_threshold(orthanc, tmp_path):
    files = _upload_study(orthanc, tmp_path / "syn", seed=14)
    uid, path = next((u, p) for u, p in files.items() if pydicom.dcmread(p).SOPClassUID == MG_FOR_PRESENTATION)
    source = pydicom.dcmread(path)
    study = str(source.StudyInstanceUID)
    mask = np.zeros((source.Rows, source.Columns), dtype=bool)
    mask[10:40, 10:40] = True
    identity = SegIdentity("demo", "run-1", 0.5)

    def seg_uids(web: DicomWeb) -> list[str]:
        return sorted(s.ref.sop_uid for s in web.stored_segs(study))

    with _client(orthanc) as web:
        first = web.store_seg(build_dicom_seg(mask, source, identity=identity), identity)
        assert first.stored and first.source_uid == uid and seg_uids(web) == [first.seg_uid]
        rerun = web.store_seg(build_dicom_seg(mask, source, identity=identity), identity)  # a new SEG UID
        assert not rerun.stored and rerun.seg_uid == first.seg_uid and seg_uids(web) == [first.seg_uid]
        other = SegIdentity("demo", "run-1", 0.3)
        third = web.store_seg(build_dicom_seg(mask, source, identity=other), other, known=web.stored_segs(study))
        assert third.stored and len(seg_uids(web)) == 2  # another threshold is another prediction
        forced = web.store_seg(build_dicom_seg(mask, source, identity=identity), identity, force=True)
        assert forced.stored and forced.seg_uid not in (first.seg_uid, third.seg_uid) and len(seg_uids(web)) == 3
        with pytest.raises(ValueError, match="does not record run run-1"):
            web.store_seg(build_dicom_seg(mask, source), identity)


class _SrServer(http.server.BaseHTTPRequestHandler):
    """A server whose metadata of an SR leaves out the content tree (as a server may for long sequences):
    QIDO lists the SR, metadata has no Content Sequence, WADO-RS sends the file. Records the paths asked for."""

    sr: pydicom.Dataset
    raw: bytes
    asked: list[str]

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        path = self.path.split("?")[0]
        self.asked.append(path)
        if path.endswith("/metadata"):
            metadata = self.sr.to_json_dict()
            del metadata["0040A730"]  # Content Sequence
            body, kind = json.dumps([metadata]).encode(), "application/dicom+json"
        elif path.endswith("/instances"):
            fields = {tag: self.sr.to_json_dict()[tag] for tag in ("0020000D", "0020000E", "00080018", "00080016",
                                                                    "00080060")}
            body, kind = json.dumps([fields]).encode(), "application/dicom+json"
        else:
            body, kind = self.raw, "application/dicom"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.timeout(60)
def test_an_sr_whose_metadata_lacks_its_content_is_fetched_to_read_its_identity(tmp_path):
    from mammoseg.dicom.seg import save_atomic
    from mammoseg.dicom.sr import build_dicom_sr

    source = pydicom.dcmread(next(iter(write_synthetic_dataset(tmp_path / "syn", patients=1, fmt="manifest",
                                                               shape=SHAPE, seed=3, progress=False).images)))
    identity = SegIdentity("demo", "run-1", 0.5)
    mask = np.zeros(SHAPE, dtype=bool)
    seg = build_dicom_seg(mask, source, identity=identity)
    path = save_atomic(build_dicom_sr([], source, seg, identity=identity), tmp_path / "sr.dcm")
    sr = pydicom.dcmread(path)
    handler = type("Handler", (_SrServer,), {"sr": sr, "raw": path.read_bytes(), "asked": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with DicomWeb(f"http://127.0.0.1:{server.server_address[1]}/dicom-web", env=ENV, retries=1) as web:
            (found,) = web.stored_srs(str(source.StudyInstanceUID))
            assert found.identity == identity and found.ref.sop_uid == sr.SOPInstanceUID
            assert found.references == {source.SOPInstanceUID, seg.SOPInstanceUID}
            ref = InstanceRef(str(source.StudyInstanceUID), str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID))
            assert handler.asked[-2:] == [f"{instance_url('/dicom-web', ref)}/metadata", instance_url("/dicom-web", ref)]
            again = build_dicom_sr([], source, seg, identity=identity)  # a new SR UID, the same image and run
            outcome = web.store_sr(again, identity, str(source.SOPInstanceUID), known=[found])
            assert (outcome.stored, outcome.seg_uid) == (False, sr.SOPInstanceUID)  # found: nothing is sent
            with pytest.raises(ValueError, match="does not record run run-1"):
                web.store_sr(build_dicom_sr([], source, seg), identity, str(source.SOPInstanceUID), known=[])
            with pytest.raises(ValueError, match="does not reference image 1.2.3"):
                web.store_sr(again, identity, "1.2.3", known=[])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
