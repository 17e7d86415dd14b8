"""Hostile folders and files, with the real commands: links planted in output folders, a second job
racing the first, special files among the inputs, CSV headers that would silently mislead.

Each test compares the bytes of every user file before and after (`tree`) or checks that the
command ended, and that its message is one line naming the file and the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mammoseg.cli import main
from mammoseg.io import host_digest, is_stale_temp, process_start, read_csv, write_text_atomic

from test_data_safety import MAMMOSEG, one_line_error, source_dataset, tree
from prepared_factory import make_prepared
from run_factory import write_random_run

pytestmark = pytest.mark.timeout(180)


def _prepare(data: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "--format", "manifest", "--src", str(data / "manifest.csv"), "--out", str(out),
                 "--size", "32", "--no-progress", *extra])


def _user_files(root: Path) -> Path:
    """A user's folder of precious files, outside every mammoseg folder."""
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("my notes\n")
    (root / "x.png").write_bytes(b"not mammoseg's")
    return root


# --------------------------------------------------------------------------- links planted in output folders


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path, capsys):
    data = source_dataset(tmp_path / "data", n=2)
    user = _user_files(tmp_path / "user")
    out = tmp_path / "prep"
    assert _prepare(data, out) == 0
    (out / ".mammoseg.lock").symlink_to(user / "notes.txt")
    before = tree(user)
    assert _prepare(data, out) == 2
    assert f"{out / '.mammoseg.lock'}: is a symbolic link; mammoseg never writes through a link" in \
        one_line_error(capsys)
    assert tree(user) == before


def test_an_owned_folder_replaced_by_a_link_is_refused_on_resume(tmp_path, capsys):
    prep = make_prepared(tmp_path / "prep", n_patients=2, per_patient=1, size=64)
    run = write_random_run(tmp_path / "run")
    user = _user_files(tmp_path / "user")
    pred = tmp_path / "pred"
    args = ["predict", "--run", str(run), "--input", str(prep), "--out", str(pred), "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    for entry in (pred / "masks").iterdir():  # the user's folder now stands where masks/ was
        entry.unlink()
    (pred / "masks").rmdir()
    (pred / "masks").symlink_to(user, target_is_directory=True)
    before = tree(user)
    assert main([*args, "--resume"]) == 2
    assert f"{pred / 'masks'}: is a symbolic link" in one_line_error(capsys)
    assert main([*args, "--overwrite"]) == 2
    one_line_error(capsys)
    assert tree(user) == before and (pred / "masks").is_symlink()


def test_a_folder_copied_with_links_never_appends_to_the_original(tmp_path, capsys):
    data = source_dataset(tmp_path / "data", n=3)
    original = tmp_path / "prep"
    assert _prepare(data, original) == 0
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-rs", str(original), str(copy)], check=True)  # every file a link to the original
    before = tree(original)
    assert _prepare(data, copy) == 2
    assert "is a symbolic link" in one_line_error(capsys)
    assert tree(original) == before


# --------------------------------------------------------------------------- a second job beside the first


HOLD_A_TEMP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mammoseg.io import atomic_path
    target = Path(sys.argv[1])
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"written by the first job")
        print(tmp, flush=True)
        while not Path(sys.argv[2]).exists():  # written while the second job runs
            time.sleep(0.02)
""")


def test_a_second_job_keeps_the_temp_files_of_a_job_still_running(tmp_path):
    """Two shards of one prediction: the second starting must not delete the first's temp file."""
    prep = make_prepared(tmp_path / "prep", n_patients=4, per_patient=1, size=64)
    run = write_random_run(tmp_path / "run")
    pred = tmp_path / "pred"
    args = [*MAMMOSEG, "predict", "--run", str(run), "--input", str(prep), "--out", str(pred), "--device", "cpu",
            "--no-progress", "--parts", "2"]
    subprocess.run([*args, "--part", "0"], check=True, capture_output=True)
    go_on = tmp_path / "go-on"
    first = subprocess.Popen([sys.executable, "-c", HOLD_A_TEMP, str(pred / "masks" / "late.png"), str(go_on)],
                             stdout=subprocess.PIPE, text=True)
    temp = Path(first.stdout.readline().strip())
    assert temp.is_file() and not is_stale_temp(temp)
    second = subprocess.run([*args, "--part", "1"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert temp.is_file(), "the second job deleted the first job's temp file"
    go_on.touch()
    assert first.wait(timeout=60) == 0  # its rename found the temp file: the first job did not crash
    assert (pred / "masks" / "late.png").read_bytes() == b"written by the first job"


def test_a_temp_file_is_stale_only_when_its_writer_is_gone(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        start = process_start(sleeper.pid)
        assert start is not None
        host = host_digest()
        alive = tmp_path / f".m.png.{sleeper.pid}-{start}-{host}.abcdefgh.tmp"
        reused = tmp_path / f".m.png.{sleeper.pid}-{start + 1}-{host}.abcdefgh.tmp"  # same pid, later process
        other_host = tmp_path / f".m.png.{sleeper.pid}-{start}-00000000.abcdefgh.tmp"
        legacy = tmp_path / ".m.png.abcdefgh.tmp"
        assert [is_stale_temp(p) for p in (alive, reused, other_host, legacy)] == [False, True, False, True]
    finally:
        sleeper.kill()
        sleeper.wait()
    deadline = time.monotonic() + 10
    while process_start(sleeper.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_stale_temp(alive)


# --------------------------------------------------------------------------- special files among the inputs


def test_a_fifo_in_an_input_folder_is_listed_not_opened(tmp_path, capsys):
    prep = make_prepared(tmp_path / "prep", n_patients=1, per_patient=1, size=64)
    run = write_random_run(tmp_path / "run")
    dicoms = tmp_path / "dicoms"
    source_dataset(dicoms, n=1)
    (dicoms / "case0_mask.png").unlink()  # a PNG in the folder would be predicted as a mammogram too
    os.mkfifo(dicoms / "stuck.dcm")
    os.mkfifo(dicoms / "stuck-without-suffix")
    pred = tmp_path / "pred"
    code = main(["predict", "--run", str(run), "--input", str(dicoms), str(prep), "--out", str(pred),
                 "--device", "cpu", "--no-progress"])
    assert code == 0  # the images were predicted; the FIFOs are listed
    errors = {Path(r["input"]).name: r["reason"] for r in read_csv(pred / "errors.csv")}
    assert errors == {"stuck-without-suffix": "a FIFO (named pipe), not a regular file; skipped",
                      "stuck.dcm": "a FIFO (named pipe), not a regular file; skipped"}
    assert len(read_csv(pred / "predictions.csv")) == 2


# --------------------------------------------------------------------------- CSV headers that would mislead


@pytest.mark.parametrize(("header", "message"), [
    ("image,mask,patient_id,mask", "column 'mask' appears twice in the header (columns 2 and 4); keep one"),
    ("image;mask;patient_id", "the header is one column separated by ';'; mammoseg reads comma-separated CSV"),
    ("image, mask, patient_id", "column name(s) ' mask', ' patient_id' have spaces around them; write them as "
                                "mask, patient_id"),
])
def test_a_misleading_csv_header_is_refused_saying_why(tmp_path, capsys, header, message):
    data = source_dataset(tmp_path / "data", n=1)
    bad = data / "cases.csv"
    separator = ";" if ";" in header else ","
    row = separator.join(["case0.dcm", "case0_mask.png", "P0"] + ([""] if header.endswith(",mask") else []))
    write_text_atomic(bad, f"{header}\n{row}\n")
    before = tree(data)
    out = tmp_path / "prep"
    assert main(["prepare", "--format", "manifest", "--src", str(bad), "--out", str(out), "--size", "32",
                 "--no-progress"]) == 2
    assert f"{bad}: {message}" in one_line_error(capsys)
    assert tree(data) == before
