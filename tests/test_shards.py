"""Shards (`--parts N --part I`) of prepare and predict: real commands into one shared folder,
merged, compared byte for byte with a one-machine run."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mammoseg.cli import main
from mammoseg.io import read_csv, write_png
from mammoseg.manifest import CROP_COLUMNS
from mammoseg.shards import Part, shard_of, stable_key

from dicom_factory import write_mg
from run_factory import write_random_run

MAMMOSEG = [sys.executable, "-m", "mammoseg"]
#: Files that say how a folder was made (per shard or whole), not what it holds.
BOOKKEEPING = (".mammoseg", ".prepare", ".predict")


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(BOOKKEEPING)}


def dataset(root: Path, n: int = 10) -> Path:
    """A manifest source: DICOMs of different sizes, masses on some, and one broken file."""
    lines = ["image,mask,patient_id"]
    for i in range(n):
        h, w = 80 + 4 * i, 64 + 2 * i
        pixels = np.full((h, w), 100, np.uint16)
        pixels[:, : w * 2 // 3] = 1500 + 50 * i
        write_mg(root / "dicoms" / f"case{i}.dcm", pixels, bits_stored=12, PatientID=f"P{i // 2}",
                 WindowCenter=2048, WindowWidth=4096)
        mask = ""
        if i % 3 == 0:
            m = np.zeros((h, w), np.uint8)
            m[20:40, 10:30] = 255
            write_png(root / "masks" / f"case{i}.png", m)
            mask = f"masks/case{i}.png"
        lines.append(f"dicoms/case{i}.dcm,{mask},P{i // 2}")
    (root / "dicoms" / "broken.dcm").write_bytes(b"not a DICOM")
    lines.append("dicoms/broken.dcm,,P99")
    (root / "cases.csv").write_text("\n".join(lines) + "\n")
    return root / "cases.csv"


def prepare_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--format", "manifest", "--src", str(src), "--out", str(out), "--size", "32", "--holdout", "0.3",
            "--no-progress", *extra]


def test_parts_split_the_inputs_deterministically():
    keys = [f"dicoms/case{i}.dcm" for i in range(200)]
    for count in (1, 2, 3, 8):
        owners = [[Part(i, count).owns(k) for i in range(count)] for k in keys]
        assert all(sum(o) == 1 for o in owners)  # every input in exactly one part
    assert [shard_of(k, 3) for k in keys[:6]] == [shard_of(k, 3) for k in keys[:6]]
    assert {shard_of(k, 2) for k in keys} == {0, 1}
    assert stable_key("/data/x/dicoms/a.dcm", "/data/x") == "dicoms/a.dcm"
    assert stable_key("/elsewhere/a.dcm", "/data/x/cases.csv") == "/elsewhere/a.dcm"
    with pytest.raises(ValueError, match="--part 2: must be in 0..1"):
        Part(2, 2)


def test_two_shards_and_merge_equal_one_run(tmp_path, capsys):
    src = dataset(tmp_path / "src")
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    assert main(prepare_args(src, whole)) == 0
    # merging before every part is done is refused, naming the missing part
    assert main(prepare_args(src, shared, "--parts", "2", "--part", "0")) == 0
    assert "when every part is done: mammoseg prepare --merge" in capsys.readouterr().out
    assert not (shared / "manifest.csv").exists()
    assert main(["prepare", "--merge", "--out", str(shared)]) == 2
    assert "cannot merge yet: part 1 missing (of --parts 2)" in capsys.readouterr().err
    assert main(prepare_args(src, shared, "--parts", "2", "--part", "1", "--workers", "2")) == 0
    assert main(["prepare", "--merge", "--out", str(shared), "--holdout", "0.3"]) == 0
    assert tree(shared) == tree(whole)  # images, masks, manifest (row order, split), errors.csv
    assert read_csv(shared / "manifest.csv") == read_csv(whole / "manifest.csv")
    assert list(read_csv(shared / "manifest.csv")[0])[-4:] == list(CROP_COLUMNS)  # the default breast crop
    assert [e["id"] for e in read_csv(shared / "errors.csv")] == ["broken"]
    # the merged folder is a whole prepared folder: a one-machine rerun resumes everything
    assert main(prepare_args(src, shared)) == 0
    assert "10 images already prepared by an earlier run (resumed)" in capsys.readouterr().out
    assert tree(shared) == tree(whole)


def test_shards_run_side_by_side_and_a_killed_shard_is_completed_by_its_rerun(tmp_path, capsys):
    src = dataset(tmp_path / "src", n=12)
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    assert main(prepare_args(src, whole)) == 0
    # both shards at once into one folder: each holds its own lock
    procs = [subprocess.Popen([*MAMMOSEG, *prepare_args(src, shared, "--parts", "2", "--part", str(i))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in (0, 1)]
    assert [p.wait() for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    # shard 1 run again and killed after its first image: unfinished, so the merge is refused
    (shared / ".prepare.part-1-of-2.json").unlink()  # as if it had never run: its images are redone
    (shared / ".prepare-done.part-1-of-2.jsonl").unlink()
    proc = subprocess.Popen([*MAMMOSEG, *prepare_args(src, shared, "--parts", "2", "--part", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = shared / ".prepare-done.part-1-of-2.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (journal.is_file() and journal.stat().st_size):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["prepare", "--merge", "--out", str(shared), "--holdout", "0.3"]) == 2
    assert "part 1 unfinished" in capsys.readouterr().err
    assert main(prepare_args(src, shared, "--parts", "2", "--part", "1")) == 0
    assert main(["prepare", "--merge", "--out", str(shared), "--holdout", "0.3"]) == 0
    assert tree(shared) == tree(whole)
    assert not list(shared.rglob("*.tmp"))


def test_overwrite_is_refused_for_a_shard(tmp_path, capsys):
    src = dataset(tmp_path / "src", n=2)
    assert main(prepare_args(src, tmp_path / "p", "--parts", "2", "--part", "0", "--overwrite")) == 2
    assert "--overwrite cannot be combined with --parts" in capsys.readouterr().err
    assert main(prepare_args(src, tmp_path / "p", "--parts", "2")) == 2
    assert "--parts and --part go together" in capsys.readouterr().err


# --------------------------------------------------------------------------- predict


def dicom_tree(root: Path, n: int) -> Path:
    """An archive-like tree: studies in subfolders, a non-DICOM file, one broken DICOM."""
    for i in range(n):
        pixels = np.full((90, 70), 100, np.uint16)
        pixels[:, :45] = 1200 + 40 * i
        write_mg(root / f"study{i % 3}" / f"img{i:02d}.dcm", pixels, bits_stored=12, PatientID=f"P{i}",
                 WindowCenter=2048, WindowWidth=4096)
    (root / "study0" / "notes.txt").write_text("not an image")
    (root / "study1" / "zz_broken.dcm").write_bytes(b"broken")
    return root


def predict_args(run: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--run", str(run), "--input", str(src), "--out", str(out), "--device", "cpu", "--no-progress",
            *extra]


def test_predict_shards_and_merge_equal_one_run(tmp_path, capsys):
    run, src = write_random_run(tmp_path / "run"), dicom_tree(tmp_path / "archive", 9)
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    assert main(predict_args(run, src, whole)) == 0
    for i in range(3):  # the shard that holds the broken file names it in its log
        assert main(predict_args(run, src, shared, "--parts", "3", "--part", str(i))) == 0
    capsys.readouterr()
    assert main(["predict", "--merge", "--out", str(shared)]) == 0
    # masks, overlays, predictions.csv (row order), errors.csv; predict.json differs in out_dir and part only
    assert {k: v for k, v in tree(shared).items() if k != "predict.json"} == \
        {k: v for k, v in tree(whole).items() if k != "predict.json"}
    a, b = (json.loads((d / "predict.json").read_text()) for d in (shared, whole))
    assert {k: v for k, v in a.items() if k not in ("out_dir", "part")} == \
        {k: v for k, v in b.items() if k not in ("out_dir", "part")}
    assert len(read_csv(shared / "predictions.csv")) == 9
    assert [e["input"].endswith("zz_broken.dcm") for e in read_csv(shared / "errors.csv")] == [True]


def test_predict_resume_after_kill_9_skips_finished_inputs(tmp_path):
    run, src = write_random_run(tmp_path / "run"), dicom_tree(tmp_path / "archive", 12)
    clean, out = tmp_path / "clean", tmp_path / "pred"
    assert main(predict_args(run, src, clean, "--batch-size", "1")) == 0
    proc = subprocess.Popen([*MAMMOSEG, *predict_args(run, src, out, "--batch-size", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / ".predict-done.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (journal.is_file() and len(journal.read_text().splitlines()) >= 3):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}
    assert 3 <= len(done_before) < 12 and not (out / "predictions.csv").exists()
    assert main(predict_args(run, src, out)) == 2  # not without --resume or --overwrite
    assert main(predict_args(run, src, out, "--resume", "--batch-size", "1")) == 0
    assert {n: (out / "masks" / n).stat().st_mtime_ns for n in done_before} == done_before  # not redone
    assert {k: v for k, v in tree(out).items() if k != "predict.json"} == \
        {k: v for k, v in tree(clean).items() if k != "predict.json"}
    # a finished folder resumed again predicts nothing; other settings are refused
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}
    assert main(predict_args(run, src, out, "--resume")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")} == stamps
    assert main(predict_args(run, src, out, "--resume", "--threshold", "0.7")) == 2


def test_inputs_are_streamed_not_scanned_first(tmp_path):
    """The first input is handed out before the walk reaches later folders: a file created after
    that still appears in the same stream."""
    from mammoseg.inference.inputs import InputItem, iter_inputs

    src = dicom_tree(tmp_path / "archive", 3)
    (src / "study9").mkdir()  # a study folder the walk has not opened yet
    stream = iter_inputs([src])
    first = next(stream)
    assert isinstance(first, InputItem) and first.id == "img00" and first.seq == 0
    write_mg(src / "study9" / "late.dcm", np.full((80, 64), 500, np.uint16), bits_stored=12, PatientID="L",
             WindowCenter=2048, WindowWidth=4096)
    rest = list(stream)
    assert [e.id for e in rest if isinstance(e, InputItem)] == ["img01", "zz_broken", "img02", "late"]
    assert [e.seq for e in rest] == [1, 2, 3, 4]
