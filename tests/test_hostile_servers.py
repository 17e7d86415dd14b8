"""`predict --dicomweb` and `prepare --format dicomweb` against misbehaving DICOMweb servers.

Each scenario starts a small server on 127.0.0.1 (tests/hostile_servers.py) that serves one
study well except where it misbehaves as broken or hostile servers were seen to: parts that
are not DICOM, JSON or HTML where DICOM is due, bytes after the data set, truncated or
trickling answers, QIDO pages that never end or repeat, a 400 MiB instance. The real command
runs each time; the exit status, the files on disk (errors.csv, the cache, what was there
before) and the time it took are checked. What holds (docs/dicom.md, "A misbehaving server"):
one bad instance never stops the others, no request outlives its deadline, and no answer
fills memory.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("dicomweb_client")
pytest.importorskip("highdicom")

from hostile_servers import (  # noqa: E402
    BOUNDARY,
    MIB,
    MULTIPART_TYPE,
    DicomWebServer,
    endless_pages,
    html_login_page,
    make_study,
    malformed_qido,
    multipart,
    non_dicom_part,
    repeated_page,
    send,
    trailing_garbage,
    truncated,
    wait_until,
    wrong_content_type,
)

from mammoseg.cli import main  # noqa: E402
from mammoseg.dicomweb.answers import BadAnswer, FirstPart  # noqa: E402
from mammoseg.dicomweb import DicomWeb  # noqa: E402
from mammoseg.dicomweb.source import DicomWebSource  # noqa: E402
from mammoseg.io import read_csv  # noqa: E402

from run_factory import write_random_run  # noqa: E402

#: What the command is given as --timeout in these tests (the deadline of every request).
TIMEOUT_S = 3
#: A hung command would run for hours (a trickling answer, endless pages); each must end well within this.
ENDS_WITHIN_S = 60


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_random_run(tmp_path_factory.mktemp("runs") / "tiny-run")


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch):
    for name in ("MAMMOSEG_DICOMWEB_TOKEN", "MAMMOSEG_DICOMWEB_USER", "MAMMOSEG_DICOMWEB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _predict(server: DicomWebServer, run: Path, out: Path, cache: Path, *args: str) -> tuple[int, float]:
    """`mammoseg predict --dicomweb` for the server's study: (exit status, seconds it took)."""
    start = time.monotonic()
    code = main(["predict", "--device", "cpu", "--no-progress", "--run", str(run), "--dicomweb", server.url,
                 "--study", server.study[0].study, "--out", str(out), "--cache", str(cache),
                 "--timeout", str(TIMEOUT_S), *args])
    return code, time.monotonic() - start


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def _cached(cache: Path, instance) -> Path:
    return cache / instance.study / instance.series / f"{instance.sop}.dcm"


#: name -> (behaviour for the bad instance, given it and the server; what its errors.csv reason says)
PER_INSTANCE = {
    "non-DICOM part": (lambda bad, server: non_dicom_part, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)"),
    "wrong Content-Type": (lambda bad, server: wrong_content_type,
                           "answered with application/json, not multipart/related DICOM (application/dicom)"),
    "HTML page": (lambda bad, server: html_login_page,
                  "answered with an HTML page (text/html), not multipart/related DICOM"),
    "garbage after the data set": (lambda bad, server: trailing_garbage(bad),
                                   "not a DICOM file: command element (0000,EEEE) in the data set"),
    "truncated": (lambda bad, server: truncated(bad), "the multipart answer ended before the end of its part"),
    "trickle": (lambda bad, server: server.trickle(bad.sop),
                f"no complete answer within {TIMEOUT_S} s (the deadline per request, --timeout)"),
    "another instance": (lambda bad, server: lambda handler: send(handler, multipart(server.study[1].data),
                                                                   MULTIPART_TYPE),
                         "the server sent instance {good}, not the one asked for"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(PER_INSTANCE))
def test_predict_one_bad_instance_is_listed_and_the_others_predicted(case, run, tmp_path):
    study = make_study(3, seed=10)
    earlier, good, bad = study
    cache, out = tmp_path / "cache", tmp_path / "pred"
    # Fetched by an earlier run: must be neither fetched again nor touched.
    before = _cached(cache, earlier)
    before.parent.mkdir(parents=True)
    before.write_bytes(earlier.data)
    stamp = before.stat().st_mtime_ns
    behaviour, reason = PER_INSTANCE[case]
    with DicomWebServer(study) as server:
        server.wado[bad.sop] = behaviour(bad, server)
        code, took = _predict(server, run, out, cache)
        bad_url = server.instance_url(bad)
        assert not any(earlier.sop in path for path in server.log)  # cached: not fetched again
        if case == "trickle":
            assert wait_until(lambda: bad.sop in server.ended, 5)  # the client hung up (the server is still up)

    assert code == 1 and took < ENDS_WITHIN_S
    (error,) = read_csv(out / "errors.csv")
    assert error["input"] == bad_url
    assert error["reason"].startswith(f"{bad_url}: {reason.format(good=good.sop)}"), error["reason"]
    assert "\n" not in error["reason"]
    assert sorted(row["id"] for row in read_csv(out / "predictions.csv")) == sorted([earlier.sop, good.sop])
    assert _files(out / "seg") == {out / "seg" / f"{uid}.dcm" for uid in (earlier.sop, good.sop)}
    summary = json.loads((out / "predict.json").read_text())["dicomweb"]
    assert (summary["n_mammograms"], summary["n_fetch_failed"], summary["n_failed"]) == (3, 1, 1)
    # The cache holds the two good instances as sent, nothing of the bad one, no temporary file.
    assert _files(cache) == {before, _cached(cache, good)}
    assert _cached(cache, good).read_bytes() == good.data
    assert before.read_bytes() == earlier.data and before.stat().st_mtime_ns == stamp


@pytest.mark.timeout(120)
def test_prepare_lists_each_bad_instance_and_prepares_the_rest(tmp_path):
    study = make_study(5, seed=20)
    good, bad = study[:2], {i.sop: i for i in study[2:]}
    garbage, text, json_answer = study[2:]
    out, cache = tmp_path / "prepared", tmp_path / "cache"
    with DicomWebServer(study) as server:
        server.wado = {garbage.sop: trailing_garbage(garbage), text.sop: non_dicom_part,
                       json_answer.sop: wrong_content_type}
        start = time.monotonic()
        code = main(["prepare", "--format", "dicomweb", "--src", server.url, "--study", study[0].study,
                     "--cache", str(cache), "--out", str(out), "--size", "64", "--no-progress", "--strict",
                     "--timeout", str(TIMEOUT_S)])
        took = time.monotonic() - start
        urls = {sop: server.instance_url(instance) for sop, instance in bad.items()}
    assert code == 1 and took < ENDS_WITHIN_S  # --strict: any input that failed makes the exit status 1
    assert sorted(row["id"] for row in read_csv(out / "manifest.csv")) == sorted(i.sop for i in good)
    errors = {row["id"]: row for row in read_csv(out / "errors.csv")}
    assert set(errors) == set(bad)
    for sop, row in errors.items():
        assert row["reason"].startswith(f"{urls[sop]}: ") and "\n" not in row["reason"], row
        assert row["source_path"] == str(_cached(cache, bad[sop]))
    assert "not a DICOM file: command element (0000,EEEE)" in errors[garbage.sop]["reason"]
    assert "not a DICOM file (no 'DICM' marker after the 128-byte preamble)" in errors[text.sop]["reason"]
    assert "answered with application/json, not multipart/related DICOM" in errors[json_answer.sop]["reason"]
    assert _files(cache) == {_cached(cache, i) for i in good}


@pytest.mark.timeout(120)
def test_a_login_page_answering_stow_is_no_stored_seg(run, tmp_path):
    study = make_study(2, seed=25)
    out = tmp_path / "pred"
    with DicomWebServer(study, stow=html_login_page) as server:
        code, took = _predict(server, run, out, tmp_path / "cache", "--store")
        posts = [path for path in server.log if path.startswith("POST ")]
        url = server.url
    assert code == 1 and took < ENDS_WITHIN_S
    assert len(posts) == 2  # each SEG was sent, and each answer judged
    rows = read_csv(out / "stored.csv")
    assert sorted(row["source_sop_instance_uid"] for row in rows) == sorted(i.sop for i in study)
    for row in rows:
        seg_uid = pydicom.dcmread(out / "seg" / f"{row['source_sop_instance_uid']}.dcm").SOPInstanceUID
        assert (row["outcome"], row["seg_sop_instance_uid"]) == ("failed", "")
        assert row["reason"] == (f"{url} instance {seg_uid}: the server's STOW-RS answer does not confirm it was "
                                 "stored (no Referenced SOP Sequence item for it)")
        # The SR references the SEG: it is not sent while the SEG is not on the server.
        assert (row["sr_outcome"], row["sr_reason"]) == ("failed", "not tried: the SEG it references is not on "
                                                                   "the server")
    web = json.loads((out / "predict.json").read_text())["dicomweb"]
    assert (web["n_store_failed"], web["n_sr_store_failed"], web["n_failed"]) == (2, 2, 2)


def _server_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"mammoseg {command}: error: ")
    return lines[0].removeprefix(f"mammoseg {command}: error: ")


#: name -> (which QIDO answer misbehaves, how, what the one-line error says after the server URL)
SEARCH_FAILURES = {
    "HTML login page": ("studies", lambda server: html_login_page,
                        ": answered with an HTML page (text/html), not DICOM JSON: is this the DICOMweb root? "
                        "a login page?"),
    "malformed QIDO JSON": ("instances", lambda server: malformed_qido,
                            " study {study}: answered with JSON that is not DICOM JSON: result 1 has '0020000D': "
                            "'1.2.3'"),
    "page repeated whatever the offset": ("instances", lambda server: repeated_page,
                                          " study {study}: the page at offset 1000 repeats results already received "
                                          "(the server ignores the QIDO offset)"),
    "headers one byte at a time": ("studies", lambda server: server.trickle("studies", headers=True),
                                   f": no complete answer within {TIMEOUT_S} s (the deadline per request, --timeout)"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(SEARCH_FAILURES))
def test_a_search_the_server_answers_wrongly_is_one_line(case, run, tmp_path, capsys):
    study = make_study(1, seed=30)
    answer, behaviour, message = SEARCH_FAILURES[case]
    cache, out = tmp_path / "cache", tmp_path / "pred"
    with DicomWebServer(study) as server:
        setattr(server, answer, behaviour(server))
        code, took = _predict(server, run, out, cache)
        expected = server.url + message.format(study=study[0].study)
    assert code == 2 and took < ENDS_WITHIN_S
    assert _server_error(capsys, "predict").startswith(expected)
    assert _files(cache) == set() and not (out / "predictions.csv").exists()


@pytest.mark.timeout(120)
def test_prepare_refuses_a_login_page_in_one_line(tmp_path, capsys):
    study = make_study(1, seed=31)
    with DicomWebServer(study, studies=html_login_page) as server:
        code = main(["prepare", "--format", "dicomweb", "--src", server.url, "--study", study[0].study,
                     "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "prepared"), "--no-progress"])
        url = server.url
    assert code == 2
    assert _server_error(capsys, "prepare") == (f"{url}: answered with an HTML page (text/html), not DICOM JSON: "
                                                "is this the DICOMweb root? a login page?")
    assert _files(tmp_path / "cache") == set()


@pytest.mark.timeout(120)
def test_paging_that_never_ends_stops_at_max_instances(run, tmp_path, capsys):
    study = make_study(1, seed=40)

    def listings(server: DicomWebServer) -> int:
        return sum(path.startswith(f"/dicom-web/studies/{study[0].study}/instances") for path in server.log)

    with DicomWebServer(study, instances=endless_pages) as server:
        code, took = _predict(server, run, tmp_path / "a", tmp_path / "cache", "--max-instances", "2500")
        assert code == 2 and took < ENDS_WITHIN_S
        assert listings(server) == 3  # 3 pages of 1000: the third passes 2500
        assert _server_error(capsys, "predict") == (
            f"{server.url} study {study[0].study}: more than 2500 instances found; narrow the search (--study, "
            "--query) or raise --max-instances")
        with DicomWeb.connect(DicomWebSource(server.url, tmp_path / "cache", (study[0].study,))) as web:
            assert web.limits.max_instances == 100_000  # without the flag
        assert _predict(server, run, tmp_path / "b", tmp_path / "cache", "--max-instances", "0")[0] == 2
        assert _server_error(capsys, "predict") == "--max-instances must be at least 1, got 0"
    assert _files(tmp_path / "cache") == set()


def _peak_rss_kib(command: list[str], log: Path, timeout: float) -> tuple[int, int]:
    """Run `command` (stderr to `log`); (exit status, its peak resident memory in KiB).

    The peak is the kernel's rusage of that one child (os.wait4), as getrusage(RUSAGE_CHILDREN)
    reports it, without the other children this test process has had (Orthanc, dciodvfy...)."""
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                return process.returncode, usage.ru_maxrss
            time.sleep(0.1)
        raise AssertionError(f"{' '.join(command[:4])} did not end within {timeout} s")
    finally:
        if process.returncode is None:
            process.kill()
            process.wait()


@pytest.mark.timeout(300)
def test_a_400_mib_instance_is_capped_and_memory_stays_flat(run, tmp_path):
    study = make_study(3, seed=50)
    big = study[2]
    huge = 400 * MIB

    def predict(server: DicomWebServer, name: str) -> list[str]:
        return [sys.executable, "-m", "mammoseg", "predict", "--device", "cpu", "--no-progress", "--run", str(run),
                "--dicomweb", server.url, "--study", big.study, "--out", str(tmp_path / name),
                "--cache", str(tmp_path / f"{name}-cache")]

    with DicomWebServer(study[:2]) as small:
        code, small_peak = _peak_rss_kib(predict(small, "small"), tmp_path / "small.log", timeout=120)
    assert code == 0, (tmp_path / "small.log").read_text()
    with DicomWebServer(study) as server:
        server.wado[big.sop] = server.huge(big.sop, huge)
        code, hostile_peak = _peak_rss_kib(predict(server, "hostile"), tmp_path / "hostile.log", timeout=120)
        assert wait_until(lambda: big.sop in server.ended, 5)
        assert server.sent[big.sop] < huge  # the client stopped reading and hung up
        big_url = server.instance_url(big)
    assert code == 1, (tmp_path / "hostile.log").read_text()
    (error,) = read_csv(tmp_path / "hostile" / "errors.csv")
    assert error == {"input": big_url, "reason": f"{big_url}: the answer is larger than 256 MiB, the cap; reading "
                                                 "stopped there"}
    assert _files(tmp_path / "hostile-cache") == {_cached(tmp_path / "hostile-cache", i) for i in study[:2]}
    print(f"peak RSS: well-behaved server {small_peak / 1024:.0f} MiB, 400 MiB instance {hostile_peak / 1024:.0f} MiB")
    assert hostile_peak <= 2 * small_peak
    assert hostile_peak - small_peak < 128 * 1024  # far below the 256 MiB read: the body went to disk, not memory


def test_the_multipart_splitter_finds_the_part_whatever_the_chunks():
    content = b"DICM" + b"\r\n--" + BOUNDARY[:-1].encode() + b"x" * 50 + b"\r\n-" + b"\0" * 30
    body = b"preamble text\r\n" + multipart(content) + b"epilogue: ignored, as RFC 2046 says"
    for size in range(1, len(body) + 1):
        sink = io.BytesIO()
        part = FirstPart(BOUNDARY, sink)
        done = any(part.feed(body[k: k + size]) for k in range(0, len(body), size))
        assert done and sink.getvalue() == content, size
    for broken, reason in ((body[: len(body) // 2], "before the end of its part"),
                           (b"no boundary at all", "before any multipart boundary"),
                           (multipart(b"x", part_type="image/jpeg"), "a part of type image/jpeg")):
        part = FirstPart(BOUNDARY, io.BytesIO())
        with pytest.raises(BadAnswer, match=reason):
            part.feed(broken)
            part.close()
