"""`mammoseg listen`, the DICOM node, against the real dcmtk tools on 127.0.0.1.

echoscu pings the node, storescu pushes synthetic mammograms (and a CT it must refuse),
storescp is the node results are forwarded to; the SEG and SR that arrive there pass dciodvfy
and their masks equal `mammoseg predict --dicom-seg`'s. A node killed with SIGKILL and restarted
ends with every image predicted once and every object sent once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_validator import assert_conformant
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from mammoseg.cli import build_parser
from mammoseg.dicom.seg import read_seg_mask
from mammoseg.io import read_png
from mammoseg.sources.synthetic import write_synthetic_dataset

from orthanc_server import free_port
from run_factory import write_random_run
from system_tools import require_tool

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    for tool in ("storescu", "storescp", "echoscu"):
        require_tool(tool, "dcmtk")
    root = tmp_path_factory.mktemp("listen")
    run = write_random_run(root / "run")
    write_synthetic_dataset(root / "synth", patients=1, shape=(128, 96), seed=3, progress=False)
    images = sorted((root / "synth" / "images").glob("*.dcm"))
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in images}
    return {"root": root, "run": run, "images": images, "uids": uids}


def start_node(run: Path, out: Path, port: int, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "mammoseg", "listen", "--run", str(run), "--out", str(out), "--port", str(port),
               "--device", "cpu", *extra]
    log = open(out.parent / f"{out.name}-{port}.log", "ab")  # noqa: SIM115 (the process owns it)
    return subprocess.Popen(command, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def wait_echo(port: int, process: subprocess.Popen, calling: str = "ECHOSCU", within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the node exited with {process.returncode}"
        if echo(port, calling) == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"no C-ECHO answer on port {port} within {within} s")


def echo(port: int, calling: str) -> int:
    return subprocess.run(["echoscu", "-aet", calling, "-aec", "MAMMOSEG", "127.0.0.1", str(port)],
                          capture_output=True, timeout=20, check=False).returncode


def store(port: int, files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-v", "-aec", "MAMMOSEG", "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=60, check=False)


def start_destination(folder: Path, port: int) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["storescp", "--aetitle", "DEST", "--output-directory", str(folder), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within} s")


def journal(out: Path) -> list[dict]:
    path = out / ".listen-done.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def ct_image(path: Path) -> Path:
    """A small CT-like image with a valid file meta: what a node for mammograms must refuse."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = generate_uid(), generate_uid(), "CT", "CT1"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.zeros((64, 64), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def destination_objects(folder: Path) -> dict[str, list[pydicom.Dataset]]:
    found: dict[str, list[pydicom.Dataset]] = {"SEG": [], "SR": []}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.filename = str(path)
        found[str(ds.Modality)].append(ds)
    return found


def kill(*processes: subprocess.Popen) -> None:
    """End what a test started that is still running (a failed assertion must not leave a node behind)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.timeout(120)
def test_node_answers_refuses_predicts_and_forwards(inputs: dict) -> None:
    root, images, uids = inputs["root"], inputs["images"], inputs["uids"]
    out, dest_dir = root / "node", root / "dest"
    dest_port, port = free_port(), free_port()
    destination = start_destination(dest_dir, dest_port)
    node = start_node(inputs["run"], out, port, "--forward", f"DEST@127.0.0.1:{dest_port}",
                      "--allow", "STORESCU", "ECHOSCU")
    try:
        wait_echo(port, node)
        assert echo(port, "INTRUDER") != 0  # a calling AE title not allowed is rejected
        ct = ct_image(root / "ct.dcm")
        sent = store(port, [*images, ct])
        ct_uid = pydicom.dcmread(ct).SOPInstanceUID
        assert sent.stderr.count("Received Store Response (Success)") == len(images), sent.stderr
        assert sent.stderr.count("Received Store Response (Error: CannotUnderstand)") == 1, sent.stderr  # 0xC000
        wait_for(lambda: len(list(dest_dir.iterdir())) == 2 * len(images), "2 objects per image at the destination")
        assert stop(node) == 0
    finally:
        kill(node, destination)
    errors = (out / "errors.csv").read_text()
    assert f"{ct_uid} from STORESCU" in errors and "is not a 2-D X-ray image class" in errors
    assert sorted(p.stem for p in (out / "received").iterdir()) == sorted(uids)  # the CT was not kept
    predicted = subprocess.run(
        [sys.executable, "-m", "mammoseg", "predict", "--run", str(inputs["run"]), "--input", str(root / "synth" / "images"),
         "--out", str(root / "pred"), "--dicom-seg", "--device", "cpu", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=60, check=False)
    assert predicted.returncode == 0, predicted.stderr
    arrived = destination_objects(dest_dir)
    assert len(arrived["SEG"]) == len(arrived["SR"]) == len(images)
    for seg in arrived["SEG"]:
        assert_conformant(seg.filename)
        source_uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        stem = uids[source_uid].stem
        expected = read_png(root / "pred" / "masks" / f"{stem}.png")
        np.testing.assert_array_equal(read_png(out / "masks" / f"{source_uid}.png"), expected)
        mask = read_seg_mask(seg.filename, source_uid, (1,), *expected.shape)
        reference = read_seg_mask(root / "pred" / "seg" / f"{stem}.dcm", source_uid, (1,), *expected.shape)
        np.testing.assert_array_equal(mask, reference)
        np.testing.assert_array_equal(mask, expected > 0)
    for sr in arrived["SR"]:
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        validation = assert_conformant(sr.filename)
        assert not validation.errors


@pytest.mark.timeout(150)
def test_killed_node_restarted_processes_each_image_once(inputs: dict) -> None:
    root, images = inputs["root"], inputs["images"]
    out, dest_dir = root / "node-kill", root / "dest-kill"
    dest_port, port = free_port(), free_port()
    forward = ("--forward", f"DEST@127.0.0.1:{dest_port}", "--retries", "2", "--retry-wait", "0.2")
    node = start_node(inputs["run"], out, port, *forward)  # the destination is down: sends fail
    try:
        wait_echo(port, node)
        pushing = subprocess.Popen(["storescu", "-aec", "MAMMOSEG", "127.0.0.1", str(port), *map(str, images)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: any(e.get("event") == "predicted" for e in journal(out)), "a first prediction")
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
        pushing.wait(timeout=30)
    finally:
        if node.poll() is None:
            node.kill()
    destination = start_destination(dest_dir, dest_port)
    node = start_node(inputs["run"], out, port, *forward)
    try:
        wait_echo(port, node)
        assert store(port, images).returncode == 0  # the sender sends the whole study again
        wait_for(lambda: len(list(dest_dir.iterdir())) == 2 * len(images), "2 objects per image at the destination")
        assert stop(node) == 0
    finally:
        kill(node, destination)
    entries = journal(out)
    predicted = Counter(e["uid"] for e in entries if e.get("event") == "predicted")
    assert predicted == Counter({uid: 1 for uid in inputs["uids"]})
    sent = Counter((e["uid"], e["object"]) for e in entries if e.get("event") == "sent")
    assert sent == Counter({(uid, kind): 1 for uid in inputs["uids"] for kind in ("seg", "sr")})
    assert len(list(dest_dir.iterdir())) == 2 * len(images)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("flags", "message"), [
    (["--forward", "PACS"], "'PACS': expected AE@host:port, e.g. PACS@pacs.example.org:104"),
    (["--forward", "PACS@host:70000"], "'PACS@host:70000': expected AE@host:port"),
    (["--ae-title", "A" * 17], "is not an AE title: 1-16 printable characters without a backslash"),
    (["--allow", "BAD\\AE"], "is not an AE title"),
    (["--port", "0"], "expected a port 1-65535, got '0'"),
    (["--queue-size", "0"], "must be more than 0, got 0"),
])
def test_bad_node_arguments_are_one_line(flags: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["listen", "--run", "r", "--out", "o", *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_node_arguments_parse_to_settings() -> None:
    args = build_parser().parse_args(["listen", "--run", "r", "--out", "o", "--forward", "PACS@10.0.0.5:104",
                                      "--allow", "ORTHANC", "CT1", "--retry-wait", "0.5"])
    assert (str(args.forward), args.forward.port, args.allow, args.ae_title, args.host, args.port, args.retry_wait) == (
        "PACS@10.0.0.5:104", 104, ["ORTHANC", "CT1"], "MAMMOSEG", "127.0.0.1", 11112, 0.5)


@pytest.mark.timeout(60)
def test_a_port_in_use_is_one_line_and_exit_2(inputs: dict) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "mammoseg", "listen", "--run", str(inputs["run"]), "--out",
                               str(inputs["root"] / "node-busy"), "--port", str(port), "--device", "cpu"],
                              env=ENV, capture_output=True, text=True, timeout=50, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"mammoseg listen: error: 127.0.0.1:{port}: cannot listen there: Address already in use "
        "(another program on that port? choose another --port)")


@pytest.mark.timeout(60)
def test_a_full_queue_holds_the_sender_back_until_the_worker_takes_an_image(inputs: dict) -> None:
    from mammoseg.inference.node import Node, NodeSettings
    from mammoseg.inference.segmenter import Segmenter

    out = inputs["root"] / "node-queue"
    node = Node(NodeSettings(out, queue_size=1), Segmenter.from_run(inputs["run"], device="cpu"), inputs["run"])
    first, second = sorted(inputs["uids"])[:2]
    for uid in (first, second):
        shutil.copyfile(inputs["uids"][uid], out / "received" / f"{uid}.dcm")
    node._enqueue(first)  # the queue holds one image: now it is full
    sender = threading.Thread(target=node._enqueue, args=(second,))
    sender.start()
    sender.join(0.5)
    assert sender.is_alive() and node.waiting.qsize() == 1  # held back, nothing more in memory
    node.worker.start()  # the worker takes the first image: the second goes in
    sender.join(30)
    assert not sender.is_alive()
    node.stop()
    assert sorted(e["uid"] for e in journal(out) if e["event"] == "predicted") == [first, second]
    assert (out / "masks" / f"{first}.png").is_file() and (out / "seg" / f"{second}.dcm").is_file()
