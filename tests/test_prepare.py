"""prepare: the prepared folder, split, errors/exit codes, overwrite/resume, workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammoseg.cli import main
from mammoseg.geometry import PadResize
from mammoseg.io import read_csv, read_png, write_png
from mammoseg.manifest import CROP_COLUMNS, MANIFEST_COLUMNS, check_patients_disjoint, load_manifest
from mammoseg.prepare import PrepareOptions, prepare_dataset
from mammoseg.prepare.journal import journal_path
from mammoseg.shards import Part
from mammoseg.prepare.splits import split_holdout

from dicom_factory import write_mg

SIZE = 32


def _breast(height: int, width: int, side: str, value: int = 40000) -> np.ndarray:
    """A bright band against one edge (the chest wall) on a dark background, uint16."""
    img = np.full((height, width), 500, np.uint16)
    band = width // 2
    if side == "left":
        img[:, :band] = value
    else:
        img[:, width - band :] = value
    return img


def _dataset(root: Path, n_patients: int = 3, corrupt: bool = False) -> Path:
    """Manifest dataset: per patient two PNG images (16-bit L, 8-bit R), masses on some."""
    lines = ["image,mask,patient_id,view,laterality,id"]
    for p in range(n_patients):
        tall = _breast(64, 48, "left")
        write_png(root / f"p{p}_L.png", tall)
        mask = np.zeros((64, 48), np.uint8)
        mask[20:36, 0:12] = 255  # 16x12 at the chest wall: 8x6 after ×0.5
        if p % 2 == 0:
            write_png(root / f"p{p}_L_mask.png", mask)
        lines.append(f"p{p}_L.png,{f'p{p}_L_mask.png' if p % 2 == 0 else ''},pat{p},CC,L,")
        write_png(root / f"p{p}_R.png", np.full((64, 64), 200, np.uint8))
        lines.append(f"p{p}_R.png,,pat{p},MLO,R,")
    if corrupt:
        (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        lines.append("broken.png,,patX,CC,L,")
        lines.append("missing.dcm,,patY,CC,L,")
    root.mkdir(parents=True, exist_ok=True)
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root


def _folder_bytes(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_prepared_folder_contents_exact(tmp_path):
    src = _dataset(tmp_path / "src")
    out = tmp_path / "out"
    summary = prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, holdout=0.34, seed=1, progress=False,
                                                                   crop=False))
    assert (summary.n_images, summary.n_with_mass, summary.n_patients, summary.n_errors) == (6, 2, 3, 0)
    assert summary.exit_code == 0
    with open(out / "manifest.csv") as fh:
        assert fh.readline().strip().split(",") == list(MANIFEST_COLUMNS)
    rows = load_manifest(out)
    assert [r["id"] for r in rows] == ["p0_L", "p0_R", "p1_L", "p1_R", "p2_L", "p2_R"]
    assert read_csv(out / "errors.csv") == [] and (out / "errors.csv").read_text().startswith("source_path,id,reason")
    tall = rows[0]
    # 64x48 with the chest wall left: 16 columns padded on the right, then 64 → 32.
    assert PadResize.from_row(tall) == PadResize(64, 48, 0, 0, 0, 16, SIZE)
    assert (tall["chest_side"], tall["laterality"], tall["view"], tall["source"]) == ("left", "L", "CC", "manifest")
    assert tall["src_image"] == str(src / "p0_L.png") and tall["pixel_spacing"] == tall["sop_instance_uid"] == ""
    image, mask = read_png(out / tall["image"]), read_png(out / tall["mask"])
    assert image.dtype == np.uint16 and image.shape == (SIZE, SIZE)
    assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[10:18, 0:6] = 255
    np.testing.assert_array_equal(mask, expected)
    # The bright band (40000) covers columns 0..23 of 64 → 0..11 after halving; the pad is 0.
    assert image[0, 0] == 40000 and image[0, 12] == 500 and image[0, 31] == 0
    assert [r["has_mass"] for r in rows] == ["1", "0", "0", "0", "1", "0"]
    # 8-bit 200 → 200 * 257 exactly; a square needs no padding.
    square = read_png(out / rows[1]["image"])
    assert (square == 200 * 257).all()
    assert not read_png(out / rows[1]["mask"]).any()


def test_dicom_input_metadata_and_patient_fallback(tmp_path):
    src = tmp_path / "src"
    pixels = np.full((40, 60), 100, np.uint16)
    pixels[:, 40:] = 3000  # chest wall on the right
    path = write_mg(
        src / "scan.dcm", pixels, bits_stored=12, PatientID="DCM-7", PixelSpacing=[0.07, 0.085],
        WindowCenter=2048, WindowWidth=4096, ImageLaterality="R", ViewPosition="MLO",
    )
    (src / "list.csv").write_text("image,mask,patient_id\nscan.dcm,,\n")
    out = tmp_path / "out"
    prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, holdout=0.0, progress=False, crop=False))
    (row,) = load_manifest(out)
    ds = pydicom.dcmread(path)
    assert row["patient_id"] == "DCM-7"
    assert row["pixel_spacing"] == "0.07\\0.085" and row["sop_instance_uid"] == ds.SOPInstanceUID
    assert (row["laterality"], row["view"], row["chest_side"], row["split"]) == ("R", "MLO", "right", "train")
    # Wider than tall: 20 rows padded at the bottom, 60 → 32.
    assert PadResize.from_row(row) == PadResize(40, 60, 0, 20, 0, 0, SIZE)
    image = read_png(out / row["image"])
    assert image[0, -1] > image[0, 0] and (image[-4:] == 0).all()


def test_split_holdout_grouped_stratified_deterministic():
    rows = [{"patient_id": f"m{i}", "has_mass": 1} for i in range(10)]
    rows += [{"patient_id": f"n{i}", "has_mass": 0} for i in range(10)]
    rows += [{"patient_id": f"m{i}", "has_mass": 0} for i in range(10)]  # a second, mass-free image
    split = split_holdout(rows, 0.2, seed=3)
    held = sorted(p for p, s in split.items() if s == "holdout")
    # 30 images: 6 held out; masses stratum 20 images → 4 (2 patients), no-mass 10 → 2 patients.
    assert sum(p.startswith("m") for p in held) == 2 and sum(p.startswith("n") for p in held) == 2
    assert split == split_holdout(list(reversed(rows)), 0.2, seed=3)  # order does not matter
    draws = {tuple(sorted(p for p, s in split_holdout(rows, 0.2, seed=s).items() if s == "holdout")) for s in range(5)}
    assert len(draws) > 1
    tagged = [dict(r, split=split[r["patient_id"]]) for r in rows]
    check_patients_disjoint(tagged, "split")
    assert set(split_holdout(rows, 0.0, seed=0).values()) == {"train"}
    # Patients too large for the target: one small patient still goes to holdout, not all.
    big = [{"patient_id": "a", "has_mass": 1}] * 5 + [{"patient_id": "b", "has_mass": 1}] * 4
    assert split_holdout(big, 0.2, seed=0) == {"a": "train", "b": "holdout"}
    assert split_holdout(big, 0.9, seed=0) in ({"a": "holdout", "b": "train"}, {"a": "train", "b": "holdout"})
    with pytest.raises(ValueError, match="holdout"):
        split_holdout(rows, 1.0, seed=0)


def test_corrupt_inputs_go_to_errors_csv_and_exit_codes(tmp_path, capsys):
    src = _dataset(tmp_path / "src", n_patients=1, corrupt=True)
    out = tmp_path / "out"
    args = ["prepare", "--format", "manifest", "--src", str(src), "--size", str(SIZE), "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    errors = read_csv(out / "errors.csv")
    assert [(Path(e["source_path"]).name, e["id"]) for e in errors] == [("broken.png", "broken"), ("missing.dcm", "missing")]
    assert "broken.png" in errors[0]["reason"] and "no such file" in errors[1]["reason"]
    assert [r["id"] for r in load_manifest(out)] == ["p0_L", "p0_R"]
    printed = capsys.readouterr().out
    assert "prepared 2 images (1 with a mass) of 1 patient into" in printed and "errors: 2" in printed
    assert main([*args, "--out", str(tmp_path / "strict"), "--strict"]) == 1
    assert len(load_manifest(tmp_path / "strict")) == 2  # strict still writes what worked
    # Nothing usable at all → bad input (exit 2), refused before the output folder is made.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "list.csv").write_text("image,mask,patient_id\nnope.png,,p\n")
    capsys.readouterr()
    assert main(["prepare", "--format", "manifest", "--src", str(bad), "--out", str(tmp_path / "o3"), "--no-progress"]) == 2
    assert "nope.png: no such file" in capsys.readouterr().err and not (tmp_path / "o3").exists()


def test_refuses_to_overwrite_unless_asked(tmp_path, capsys):
    src = _dataset(tmp_path / "src", n_patients=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False))
    # --overwrite acts only in a folder prepare wrote: a user's folder is refused all the same
    with pytest.raises(FileExistsError, match="never deletes"):
        prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    out = tmp_path / "prepared"
    prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False))
    (out / "notes.txt").write_text("mine")  # a user's file beside the outputs survives --overwrite
    prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and len(load_manifest(out)) == 2
    with pytest.raises(FileExistsError, match="size"):
        prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE * 2, progress=False))
    code = main(["prepare", "--format", "manifest", "--src", str(src), "--out", str(out), "--size", "64"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE * 2, progress=False), overwrite=True)
    assert read_png(out / "images" / "p0_L.png").shape == (64, 64)


def test_resume_skips_finished_images(tmp_path):
    src = _dataset(tmp_path / "src", n_patients=2)
    full = tmp_path / "full"
    prepare_dataset("manifest", src, full, PrepareOptions(size=SIZE, progress=False))
    out = tmp_path / "out"
    prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False))
    # Simulate an interruption: the last image's journal line was torn, one PNG never written.
    journal = journal_path(out, Part())
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    (out / "images" / "p0_R.png").unlink()
    (out / "manifest.csv").unlink()
    stamp = (out / "images" / "p0_L.png").stat().st_mtime_ns
    summary = prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False))
    assert summary.n_resumed == 2 and summary.n_images == 4
    assert (out / "images" / "p0_L.png").stat().st_mtime_ns == stamp
    assert _folder_bytes(out) == _folder_bytes(full)
    # A different seed only redraws the split; every image is reused.
    again = prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, seed=5, holdout=0.5, progress=False))
    assert again.n_resumed == 4 and again.n_train == again.n_holdout == 2
    saved = json.loads((out / ".prepare.json").read_text())["settings"]
    assert saved["size"] == SIZE and saved["format"] == "manifest"


def test_two_workers_write_the_same_folder_as_one(tmp_path):
    src = _dataset(tmp_path / "src", n_patients=2, corrupt=True)
    one, two = tmp_path / "one", tmp_path / "two"
    prepare_dataset("manifest", src, one, PrepareOptions(size=SIZE, workers=1, progress=False))
    summary = prepare_dataset("manifest", src, two, PrepareOptions(size=SIZE, workers=2, progress=False))
    assert summary.n_images == 4 and summary.n_errors == 2
    assert _folder_bytes(one) == _folder_bytes(two)


@pytest.mark.parametrize(
    "fmt, synth_extra, prepare_extra",
    [
        ("inbreast", [], []),
        ("cbis-ddsm", [], []),
        ("cbis-ddsm", ["--cbis-naming", "old"], ["--keep-official-split"]),
        ("manifest", [], []),
    ],
)
def test_synthetic_datasets_prepare(tmp_path, fmt, synth_extra, prepare_extra):
    synth = tmp_path / "synth"
    args = ["synth", "--out", str(synth), "--format", fmt, "--patients", "2", "--shape", "160x128", "--seed", "4"]
    assert main([*args, *synth_extra]) == 0
    out = tmp_path / "prepared"
    args = ["prepare", "--format", fmt, "--src", str(synth), "--out", str(out), "--size", "64", "--no-progress"]
    assert main([*args, *prepare_extra]) == 0
    rows = load_manifest(out)
    assert len(rows) == 8 and read_csv(out / "errors.csv") == []
    assert {r["split"] for r in rows} == {"train", "holdout"}
    assert any(r["has_mass"] == "1" for r in rows)
    for row in rows:
        assert read_png(out / row["image"]).shape == (64, 64)
        assert row["laterality"] in ("L", "R") and row["view"] in ("CC", "MLO") and row["source"] == fmt
        if prepare_extra:  # the dataset's own split: Mass-Test cases are the holdout
            assert row["split"] == ("holdout" if row["id"].startswith("Mass-Test") else "train")


def test_breast_crop_by_default_and_its_manifest_columns(tmp_path):
    src = _dataset(tmp_path / "src", n_patients=1)
    out = tmp_path / "out"
    prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, holdout=0, progress=False))
    with open(out / "manifest.csv") as fh:
        assert fh.readline().strip().split(",") == [*MANIFEST_COLUMNS, *CROP_COLUMNS]
    assert json.loads((out / ".prepare.json").read_text())["settings"]["crop"] is True
    tall, square = load_manifest(out)
    # The band (columns 0..23 of 48) fills every row: the box is all rows, columns 0..23 plus the
    # 4 px margin; 64×28 is padded on the right to 64 and resized to 32.
    assert PadResize.from_row(tall) == PadResize(64, 48, 0, 0, 0, 36, SIZE, 0, 0, 0, 20)
    image, mask = read_png(out / tall["image"]), read_png(out / tall["mask"])
    assert (image[:, :12] == 40000).all() and (image[:, 12:14] == 500).all() and not image[:, 14:].any()
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[10:18, 0:6] = 255  # the 16×12 mass at the chest wall, halved
    np.testing.assert_array_equal(mask, expected)
    # A uniform image has no breast to find: not cropped, and its row says so.
    assert [square[c] for c in CROP_COLUMNS] == ["0"] * 4 and PadResize.from_row(square) == PadResize(64, 64, 0, 0, 0, 0, SIZE)


def test_a_folder_prepared_without_crop_resumes_with_no_crop_and_is_refused_with_it(tmp_path, capsys):
    src = _dataset(tmp_path / "src", n_patients=1)
    out, old = tmp_path / "out", tmp_path / "old"
    assert main(["prepare", "--format", "manifest", "--src", str(src), "--out", str(out), "--size", str(SIZE),
                 "--no-crop", "--no-progress"]) == 0
    prepare_dataset("manifest", src, old, PrepareOptions(size=SIZE, progress=False, crop=False))
    assert "crop" not in json.loads((out / ".prepare.json").read_text())["settings"]  # as before the crop existed
    with open(out / "manifest.csv") as fh:
        assert fh.readline().strip().split(",") == list(MANIFEST_COLUMNS)
    assert _folder_bytes(out) == _folder_bytes(old)
    again = prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False, crop=False))
    assert again.n_resumed == 2
    with pytest.raises(FileExistsError, match=r"different settings \(crop\)"):
        prepare_dataset("manifest", src, out, PrepareOptions(size=SIZE, progress=False))
