"""Data safety (README, "Your data is safe"): real runs of the commands on small files, bytes on disk checked.

Nothing a user owns is ever deleted, overwritten or silently stale; outputs are readable by
the group; a killed run leaves nothing half-written; bad input fails with one line.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from mammoseg.cli import main
from mammoseg.dicom import DicomReadError, read_mammogram
from mammoseg.dicom.checks import ReadLimits
from mammoseg.folders import MARKER, FolderLock
from mammoseg.io import read_csv, read_png, write_png
from mammoseg.manifest import load_manifest

from dicom_factory import mg_dataset, save_dataset, write_mg
from prepared_factory import make_prepared
from run_factory import write_random_run

MAMMOSEG = [sys.executable, "-m", "mammoseg"]


def tree(folder: Path) -> dict[str, str]:
    """relative path → SHA-256 of every file under `folder`: what 'byte-identical' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def breast(height: int = 96, width: int = 72) -> np.ndarray:
    """12-bit breast against the left edge, a brighter 'mass' in it."""
    img = np.full((height, width), 100, np.uint16)
    img[:, : width * 2 // 3] = 1500
    img[30:50, 10:30] = 3000
    return img


def source_dataset(root: Path, n: int = 4) -> Path:
    """A user's dataset: DICOMs, PNG masks and manifest.csv (the layout `--format manifest` reads)."""
    lines = ["image,mask,patient_id"]
    for i in range(n):
        write_mg(root / f"case{i}.dcm", breast(), bits_stored=12, PatientID=f"P{i}", WindowCenter=2048, WindowWidth=4096)
        mask = np.zeros((96, 72), np.uint8)
        mask[30:50, 10:30] = 255
        write_png(root / f"case{i}_mask.png", mask)
        lines.append(f"case{i}.dcm,case{i}_mask.png,P{i}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- the scenarios


def test_prepare_out_equal_to_the_source_folder_deletes_nothing(tmp_path, capsys):
    data = source_dataset(tmp_path / "data")
    before = tree(data)
    code = main(["prepare", "--format", "manifest", "--src", str(data / "manifest.csv"), "--out", str(data),
                 "--overwrite", "--size", "32", "--no-progress"])
    assert code == 2
    assert "the output folder contains the input" in one_line_error(capsys)
    assert tree(data) == before
    # an output folder holding the source, or inside a dataset folder given as --src, is refused as well
    for src, out in ((data / "manifest.csv", tmp_path), (data, data / "prepared")):
        assert main(["prepare", "--format", "manifest", "--src", str(src), "--out", str(out),
                     "--size", "32", "--no-progress"]) == 2
        assert "choose an --out outside your data" in one_line_error(capsys)
    assert tree(data) == before and not (data / "prepared").exists()


def test_predict_into_the_prepared_folder_replaces_no_reference_mask(tmp_path, capsys):
    prep = make_prepared(tmp_path / "prep", n_patients=2, per_patient=1, size=64)
    run = write_random_run(tmp_path / "run")
    before = tree(prep)
    code = main(["predict", "--run", str(run), "--input", str(prep), "--out", str(prep), "--overwrite",
                 "--device", "cpu"])
    assert code == 2 and "the output folder is the input" in one_line_error(capsys)
    assert tree(prep) == before


def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "d"
    (out / "synthetic").mkdir(parents=True)
    (out / "synthetic" / "my_study.dcm").write_bytes(b"precious")
    before = tree(out)
    assert main(["demo", "--out", str(out)]) == 2
    assert "was not written by `mammoseg demo`" in one_line_error(capsys)
    assert main(["demo", "--out", str(out), "--overwrite"]) == 2
    one_line_error(capsys)
    assert tree(out) == before


def test_a_demo_folder_whose_synthetic_part_is_not_synths_is_refused(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / MARKER).write_text('{"command": "demo"}\n')
    (out / "synthetic").mkdir()
    (out / "synthetic" / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(out), "--patients", "5"]) == 2
    assert "synthetic: is not empty and was not written by `mammoseg synth`" in one_line_error(capsys)
    assert (out / "synthetic" / "mine.txt").read_text() == "keep"


def test_resume_redoes_an_image_whose_mask_changed(tmp_path):
    data = source_dataset(tmp_path / "data", n=3)
    out = tmp_path / "prep"
    args = ["prepare", "--format", "manifest", "--src", str(data / "manifest.csv"), "--out", str(out),
            "--size", "32", "--no-progress"]
    assert main(args) == 0
    first = tree(out / "images")
    stamp = (out / "masks" / "case0.png").stat().st_mtime_ns
    edited = np.zeros((96, 72), np.uint8)
    edited[0:40, 0:40] = 255
    write_png(data / "case1_mask.png", edited)
    os.utime(data / "case1_mask.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    from mammoseg.prepare import PrepareOptions, prepare_dataset

    summary = prepare_dataset("manifest", data / "manifest.csv", out, PrepareOptions(size=32, progress=False))
    summary_lines = summary.format()
    assert summary.n_resumed == 2 and summary.n_changed == 1
    assert "1 image prepared again: the source file(s) changed" in summary_lines
    assert (out / "masks" / "case0.png").stat().st_mtime_ns == stamp  # untouched
    expected = np.zeros((32, 32), np.uint8)
    expected[0:13, 0:13] = 255  # 40 of 96 rows/cols → 13.3 prepared pixels, half-covered rule
    np.testing.assert_array_equal(read_png(out / "masks" / "case1.png")[:16, :16], expected[:16, :16])
    assert tree(out / "images") == first


# --------------------------------------------------------------------------- bounded memory


def test_a_thin_dicom_is_refused_from_its_header(tmp_path, capsys):
    data = tmp_path / "data"
    write_mg(data / "thin.dcm", np.tile(np.arange(12000, dtype=np.uint16) % 4096, (1, 1)), bits_stored=12,
             PatientID="P1", WindowCenter=2048, WindowWidth=4096)
    write_mg(data / "ok.dcm", breast(), bits_stored=12, PatientID="P2", WindowCenter=2048, WindowWidth=4096)
    (data / "list.csv").write_text("image,mask,patient_id\nthin.dcm,,P1\nok.dcm,,P2\n")
    out = tmp_path / "prep"
    assert main(["prepare", "--format", "manifest", "--src", str(data / "list.csv"), "--out", str(out),
                 "--size", "32", "--holdout", "0", "--no-progress"]) == 0
    (error,) = read_csv(out / "errors.csv")
    assert error["id"] == "thin" and "1 × 12000 has aspect ratio 12000.0:1, beyond the 5:1" in error["reason"]
    assert [r["id"] for r in load_manifest(out)] == ["ok"]


def test_pixel_count_cap_and_a_deflate_bomb(tmp_path):
    path = save_dataset(mg_dataset(breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096), tmp_path / "a.dcm")
    with pytest.raises(DicomReadError, match=r"96 × 72 = 0.0 Mpx exceeds the 0.001 Mpx limit"):
        read_mammogram(path, limits=ReadLimits(max_pixels=1000))
    # A deflated file that inflates to 40 MB (a private element of zeros) is refused while
    # inflating, before pydicom would inflate it whole.
    ds = mg_dataset(np.arange(64, dtype=np.uint16).reshape(8, 8), WindowCenter=32, WindowWidth=64)
    ds.add_new(0x00091010, "OB", bytes(40 * 2**20))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(bomb, enforce_file_format=True)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DicomReadError, match="inflates beyond 16 MB"):
        read_mammogram(bomb, limits=ReadLimits(max_pixels=1000))
    # within the default limits the same (valid) file is read
    assert read_mammogram(bomb).pixels.shape == (8, 8)


# --------------------------------------------------------------------------- files others can read


def _modes(folder: Path) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file() and p.name != ".mammoseg.lock"}


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, expected):
    data = source_dataset(tmp_path / "data", n=2)
    out = tmp_path / "prep"
    subprocess.run([*MAMMOSEG, "prepare", "--format", "manifest", "--src", str(data / "manifest.csv"), "--out",
                    str(out), "--size", "32", "--no-progress"], check=True, preexec_fn=lambda: os.umask(umask))
    assert _modes(out) == {expected}
    run = write_random_run(tmp_path / "run")
    pred = tmp_path / "pred"
    subprocess.run([*MAMMOSEG, "predict", "--run", str(run), "--input", str(out), "--out", str(pred), "--device",
                    "cpu"], check=True, preexec_fn=lambda: os.umask(umask), capture_output=True)
    assert _modes(pred) == {expected}


def test_checkpoints_follow_the_umask(tmp_path):
    data = make_prepared(tmp_path / "data", n_patients=5, per_patient=1, size=64)
    run = tmp_path / "run"
    subprocess.run([*MAMMOSEG, "train", "--config", "demo", "--data", str(data), "--out", str(run), "--folds", "0",
                    "--device", "cpu", "--no-progress", *TINY], check=True, preexec_fn=lambda: os.umask(0o022),
                   capture_output=True)
    assert stat.S_IMODE((run / "fold0" / "best.pt").stat().st_mode) == 0o644
    assert _modes(run) == {0o644}


# --------------------------------------------------------------------------- killed runs, workers, locks


def test_kill_9_then_rerun_leaves_no_temp_file_and_the_same_result(tmp_path):
    data = source_dataset(tmp_path / "data", n=6)
    clean, out = tmp_path / "clean", tmp_path / "prep"
    args = ["prepare", "--format", "manifest", "--src", str(data / "manifest.csv"), "--size", "32", "--no-progress"]
    assert main([*args, "--out", str(clean)]) == 0
    proc = subprocess.Popen([*MAMMOSEG, *args, "--out", str(out)], stderr=subprocess.DEVNULL)
    journal = out / ".prepare-done.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (journal.is_file() and journal.stat().st_size):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # what a kill inside a write leaves: a temp file beside its target
    (out / "images" / ".case5.png.abcd1234.tmp").write_bytes(b"half a png")
    assert main([*args, "--out", str(out)]) == 0
    assert not list(out.rglob("*.tmp"))
    strip = {".mammoseg.lock", ".prepare.json", ".prepare-done.jsonl", ".mammoseg.json"}
    assert {k: v for k, v in tree(out).items() if k not in strip} == \
        {k: v for k, v in tree(clean).items() if k not in strip}


def test_a_second_concurrent_run_fails_at_once(tmp_path):
    data = source_dataset(tmp_path / "data", n=2)
    out = tmp_path / "prep"
    args = [*MAMMOSEG, "prepare", "--format", "manifest", "--src", str(data / "manifest.csv"), "--out", str(out),
            "--size", "32", "--no-progress"]
    subprocess.run(args, check=True)
    before = tree(out)
    holder = FolderLock(out)  # a first run, holding the folder
    try:
        second = subprocess.run(args, capture_output=True, text=True)
    finally:
        holder.release()
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and f"pid {os.getpid()}" in second.stderr
    assert "in use by another mammoseg run" in second.stderr
    assert {k: v for k, v in tree(out).items() if k != ".mammoseg.lock"} == \
        {k: v for k, v in before.items() if k != ".mammoseg.lock"}


def die_on(task: int) -> int:
    """A task function for the worker-pool test: task 3 kills its own worker process."""
    if task == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return task * task


def test_a_dead_worker_fails_only_its_task_and_is_replaced():
    from mammoseg.workers import run_tasks

    results = {r.index: r for r in run_tasks(die_on, list(range(8)), workers=2)}
    assert sorted(results) == list(range(8))
    assert "killed by SIGKILL (e.g. by the out-of-memory killer)" in results[3].worker_died
    assert {i: r.value for i, r in results.items() if i != 3} == {i: i * i for i in range(8) if i != 3}


class KillingMask:
    """A mask whose loading kills the worker process that prepares it (as the OOM killer would)."""

    def files(self) -> tuple[Path, ...]:
        return ()

    def load(self, height: int, width: int) -> np.ndarray:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


def test_prepare_reports_the_one_record_whose_worker_died(tmp_path):
    from mammoseg.prepare.pipeline import PrepareSummary, _prepare_records
    from mammoseg.prepare.journal import open_journal, read_journals
    from mammoseg.shards import Part
    from mammoseg.sources.records import Record

    data = source_dataset(tmp_path / "data", n=5)
    records = [Record(f"case{i}", data / f"case{i}.dcm", f"P{i}", mask=KillingMask() if i == 2 else None)
               for i in range(5)]
    records = [r if r.mask is not None else Record(r.id, r.image, r.patient_id) for r in records]
    out = tmp_path / "prep"
    (out / "images").mkdir(parents=True)
    with open_journal(out, Part()) as journal:
        died = _prepare_records(records, out, 32, workers=2, progress=False, journal=journal)
    found = read_journals(out)
    assert died == 1 and sorted(found.rows) == ["case0", "case1", "case3", "case4"]
    assert list(found.errors) == ["case2"]
    assert "worker process was killed by SIGKILL (e.g. by the out-of-memory killer) while preparing it" in \
        found.errors["case2"]["reason"]
    assert PrepareSummary(out, n_images=4, n_worker_died=died).exit_code == 1


# --------------------------------------------------------------------------- training folders


TINY = ["crop_size=64", "batch_size=2", "num_workers=0", "norm_samples=2", "n_folds=2", "model.encoder=resnet22",
        "model.encoder_weights=null", "epochs.combo=1", "epochs.focal_tversky=1", "freeze_encoder_epochs=0",
        "lr_milestones=[]"]


def test_unfinished_fold_is_kept_and_overwrite_removes_derived_outputs(tmp_path, capsys):
    from mammoseg.config import load_config
    from mammoseg.layouts import FoldFiles
    from mammoseg.training.fold import FoldJob, train_fold

    data = make_prepared(tmp_path / "data", n_patients=5, per_patient=1, size=64)
    run = tmp_path / "run"
    args = ["train", "--config", "demo", "--data", str(data), "--out", str(run), "--device", "cpu", "--no-progress",
            *TINY]
    assert main([*args, "--folds", "0"]) == 0
    # fold 1 interrupted after its first epoch, as a killed run leaves it
    rows = load_manifest(data, split="train")
    train_fold(FoldJob(load_config("demo", TINY), data, rows[:2], rows[2:], FoldFiles(1, run / "fold1"),
                       progress=False), stop_after_epoch=1)
    before = tree(run / "fold1")
    assert main([*args, "--folds", "1"]) == 2
    assert "fold 1 is unfinished (last.pt after epoch 1); use --resume to continue it" in one_line_error(capsys)
    assert tree(run / "fold1") == before
    # --overwrite removes the models and what was derived from them, nothing else
    for derived in ("holdout_pred/masks/x.png", "eval/summary.json", "reproduce.json", "view/index.html"):
        (run / derived).parent.mkdir(parents=True, exist_ok=True)
        (run / derived).write_text("old")
    (run / "notes.txt").write_text("mine")
    assert main([*args, "--folds", "0", "--overwrite"]) == 0
    assert [p.name for p in sorted(run.iterdir())] == [".mammoseg.json", "config.yaml", "fold0",
                                                       "folds.csv", "notes.txt"]
    assert (run / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- DICOM checks


def _read(tmp_path, name="x.dcm", pixels=None, **attributes):
    pixels = breast() if pixels is None else pixels
    return read_mammogram(save_dataset(mg_dataset(pixels, **attributes), tmp_path / name))


@pytest.mark.parametrize("attributes,message", [
    ({"RescaleSlope": "NaN", "WindowCenter": 2048, "WindowWidth": 4096}, "RescaleSlope is nan"),
    ({"WindowCenter": "inf", "WindowWidth": 4096}, "WindowCenter is inf"),
    ({"Modality": "CT", "WindowCenter": 40, "WindowWidth": 400}, "Modality CT: not a mammogram"),
    ({"Modality": "DX", "BodyPartExamined": "CHEST"}, "Modality DX of CHEST: not a mammogram"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.66.4"}, r"Segmentation Storage\) is not a 2-D X-ray image class"),
])
def test_header_checks_name_the_file_and_the_attribute(tmp_path, attributes, message):
    with pytest.raises(DicomReadError, match=message) as info:
        _read(tmp_path, **attributes)
    assert str(info.value).startswith(str(tmp_path / "x.dcm"))


def test_32_bit_pixels_are_a_clear_error(tmp_path):
    ds = mg_dataset(np.zeros((8, 8), np.uint16))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = np.full((8, 8), 2**31 + 5, np.uint32).tobytes()
    with pytest.raises(DicomReadError, match="Bits Stored 32"):
        read_mammogram(save_dataset(ds, tmp_path / "wide.dcm"))


def test_dx_of_the_breast_is_read(tmp_path):
    m = _read(tmp_path, Modality="DX", BodyPartExamined="BREAST", WindowCenter=2048, WindowWidth=4096,
              SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1")
    assert m.pixels.shape == (96, 72)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_pixel_padding_becomes_background(tmp_path, photometric):
    pixels = breast()
    pixels[:, 60:] = 4095  # padding stored as the brightest value (MONOCHROME1 scanners do this)
    m = _read(tmp_path, pixels=pixels, photometric=photometric, bits_stored=12, PixelPaddingValue=4095,
              WindowCenter=2048, WindowWidth=4096)
    assert (m.pixels[:, 60:] == 0).all()
    assert m.pixels[:, :48].min() > 0 if photometric == "MONOCHROME2" else m.pixels[:, 60:].max() == 0
    # a range: Pixel Padding Value to Pixel Padding Range Limit
    pixels[:, 56:60] = 4000
    m = _read(tmp_path, "r.dcm", pixels=pixels, bits_stored=12, PixelPaddingValue=4095, PixelPaddingRangeLimit=3990,
              WindowCenter=2048, WindowWidth=4096)
    assert (m.pixels[:, 56:] == 0).all() and m.pixels[40, 20] > 0


def test_for_processing_images_are_flagged_in_the_manifest(tmp_path, capsys):
    data = tmp_path / "data"
    write_mg(data / "a.dcm", breast(), bits_stored=12, PatientID="P1", WindowCenter=2048, WindowWidth=4096,
             PresentationIntentType="FOR PROCESSING", SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2.1")
    write_mg(data / "b.dcm", breast(), bits_stored=12, PatientID="P2", WindowCenter=2048, WindowWidth=4096,
             PresentationIntentType="FOR PRESENTATION")
    (data / "l.csv").write_text("image,mask,patient_id\na.dcm,,P1\nb.dcm,,P2\n")
    assert main(["prepare", "--format", "manifest", "--src", str(data / "l.csv"), "--out", str(tmp_path / "p"),
                 "--size", "32", "--no-progress"]) == 0
    assert "1 image FOR PROCESSING" in capsys.readouterr().out
    rows = {r["id"]: r["presentation_intent"] for r in load_manifest(tmp_path / "p")}
    assert rows == {"a": "FOR PROCESSING", "b": "FOR PRESENTATION"}


# --------------------------------------------------------------------------- one-line errors


def test_bad_csv_files_are_one_line_errors_naming_the_file(tmp_path, capsys):
    data = source_dataset(tmp_path / "data", n=1)
    latin = data / "latin.csv"
    latin.write_bytes("image,mask,patient_id\ncase0.dcm,,Ren\xe9e\n".encode("latin-1"))
    assert main(["prepare", "--format", "manifest", "--src", str(latin), "--out", str(tmp_path / "p")]) == 2
    assert f"{latin}: not UTF-8 text" in one_line_error(capsys)
    runaway = data / "runaway.csv"  # an opening quote never closed: the rest of the file is one field
    runaway.write_text('image,mask,patient_id\n"case0.dcm,,P0\n' + "case1.dcm,,P1\n" * 20000)
    assert main(["prepare", "--format", "manifest", "--src", str(runaway), "--out", str(tmp_path / "p")]) == 2
    assert f"{runaway}: not valid CSV after line 1 (field larger than field limit" in one_line_error(capsys)


def test_duplicate_or_unsafe_ids_in_a_manifest_are_refused(tmp_path):
    prep = make_prepared(tmp_path / "prep", n_patients=2, per_patient=1)
    text = (prep / "manifest.csv").read_text()
    (prep / "manifest.csv").write_text(text.replace("p1_0,", "P0_0,", 1))
    with pytest.raises(ValueError, match="line 3: id 'P0_0' is used twice"):
        load_manifest(prep)
    (prep / "manifest.csv").write_text(text.replace("p1_0,", "p1 0,", 1))
    with pytest.raises(ValueError, match="id 'p1 0' is not file-name safe"):
        load_manifest(prep)


def test_a_nan_loss_is_a_failed_run_in_one_line(tmp_path, capsys):
    data = make_prepared(tmp_path / "data", n_patients=5, per_patient=1, size=64)
    code = main(["train", "--config", "demo", "--data", str(data), "--out", str(tmp_path / "run"), "--folds", "0",
                 "--device", "cpu", "--no-progress", *TINY, "optimiser.lr=1e30"])
    assert code == 1
    assert "training loss is nan; lower optimiser.lr?" in one_line_error(capsys)


def test_failure_messages_say_what_to_do():
    from mammoseg.cli import failure_message

    with pytest.raises(OSError) as full:
        with open("/dev/full", "w") as fh:
            fh.write("x")
    assert failure_message(full.value) == ("disk: no space left on the device; free some space or write "
                                           "elsewhere", 1)
    full.value.filename = "/data/out/manifest.csv"  # what a failed write into an output folder carries
    assert failure_message(full.value)[0].startswith("/data/out/manifest.csv: no space left")
    denied = PermissionError(13, "Permission denied", "/data/out")
    assert failure_message(denied)[1] == 2 and "permission denied" in failure_message(denied)[0]
    assert failure_message(ImportError("DICOM Segmentation output needs highdicom: pip install mammoseg[dicom-seg]")) \
        == ("DICOM Segmentation output needs highdicom: pip install mammoseg[dicom-seg]", 2)
    text, status = failure_message(RuntimeError("CUDA error"))
    assert status == 1 and text == "RuntimeError: CUDA error (run with -v for the traceback)"


def test_folds_train_side_by_side_as_separate_jobs(tmp_path):
    """Each fold is trained under its own lock: two jobs into one run folder both succeed, and a
    second job on the same fold is refused while the first trains it."""
    data = make_prepared(tmp_path / "data", n_patients=6, per_patient=1, size=64)
    run = tmp_path / "run"
    args = [*MAMMOSEG, "train", "--config", "demo", "--data", str(data), "--out", str(run), "--device", "cpu",
            "--no-progress", *TINY]
    jobs = [subprocess.Popen([*args, "--folds", str(k)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for k in (0, 1)]
    assert [job.wait() for job in jobs] == [0, 0], [job.stderr.read() for job in jobs]
    assert (run / "fold0" / "best.pt").is_file() and (run / "fold1" / "best.pt").is_file()
    holder = FolderLock(run, ".mammoseg.fold0.lock")  # a job training fold 0 (finished folds are skipped,
    try:                                                # so ask for an overwrite, which must not touch it)
        busy = subprocess.run([*args, "--folds", "0", "--overwrite"], capture_output=True, text=True)
    finally:
        holder.release()
    assert busy.returncode == 1 and "fold0: in use by another mammoseg run" in busy.stderr
    assert (run / "fold0" / "best.pt").is_file()
