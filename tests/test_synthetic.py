"""Synthetic phantoms and `mammoseg synth`: layouts, DICOM tags, masks, determinism."""

from __future__ import annotations

import csv
import hashlib
import plistlib
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut

from mammoseg.cli import main
from mammoseg.commands.synth import parse_shape
from mammoseg.io import read_png
from mammoseg.sources.synthetic import SynthStyle, write_synthetic_dataset
from mammoseg.sources.synthetic.dicom_writer import MG_FOR_PRESENTATION, MG_FOR_PROCESSING
from mammoseg.sources.synthetic.layouts import CBIS_CSV_COLUMNS
from mammoseg.sources.synthetic.masses import MassSpec
from mammoseg.sources.synthetic.phantom import make_phantom, mass_diameter_px, render_phantom
from mammoseg.sources.synthetic.plan import plan_dataset
from mammoseg.sources.synthetic.texture import power_law_noise

SHAPE = (192, 160)
POINT = re.compile(r"^\(\s*(-?[0-9.]+),\s*(-?[0-9.]+)\)$")


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "manifest"
    write_synthetic_dataset(out, patients=3, fmt="manifest", shape=SHAPE, seed=3, progress=False,
                            style=SynthStyle(markers=False))  # the phantoms alone (markers: their own test)
    return out


@pytest.fixture(scope="module")
def inbreast_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "inbreast"
    write_synthetic_dataset(out, patients=3, fmt="inbreast", shape=SHAPE, seed=4, progress=False,
                            style=SynthStyle(markers=False))  # the phantoms alone (markers: their own test)
    return out


@pytest.fixture(scope="module")
def cbis_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cbis"
    write_synthetic_dataset(out, patients=3, fmt="cbis-ddsm", shape=SHAPE, seed=5, progress=False,
                            style=SynthStyle(markers=False))  # the phantoms alone (markers: their own test)
    return out


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _density(ds: pydicom.Dataset) -> np.ndarray:
    """Stored values as float, with MONOCHROME1 inverted so dense tissue is high."""
    pixels = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = (2 ** int(ds.BitsStored) - 1) - pixels
    return pixels


def _mass_brighter_than_ring(image: np.ndarray, mask: np.ndarray) -> bool:
    radius = max(2, int(np.sqrt(mask.sum() / np.pi) / 2))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    background = image[0, :].min()  # air rows/corners are the darkest values
    ring &= image > background + 0.05 * (image.max() - background)  # stay inside the breast
    return float(image[mask].mean()) > float(image[ring].mean())


def _crop_to_mask(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _mass_shapes(mask: np.ndarray) -> list[bytes]:
    """Each connected mass cropped to its bounding box, as sortable bytes (position dropped)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    crops = [_crop_to_mask(labels == k) for k in range(1, count)]
    return sorted(f"{c.shape}".encode() + np.packbits(c).tobytes() for c in crops)


# --- the phantom itself -------------------------------------------------------------------


def test_power_law_noise_has_the_requested_spectral_slope():
    field = power_law_noise(np.random.default_rng(0), (256, 256), beta=3.0)
    assert field.dtype == np.float32
    assert abs(float(field.mean())) < 1e-4 and abs(float(field.std()) - 1) < 1e-4
    power = np.abs(np.fft.fft2(field)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij"))
    band = (f > 0.02) & (f < 0.3)  # above the low-frequency knee
    slope = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert -3.3 < slope < -2.7


def test_mass_diameter_rule_known_values():
    assert mass_diameter_px(4, 800, 0.085) == pytest.approx(0.03 * 800)  # width rule
    assert mass_diameter_px(40, 800, 0.085) == pytest.approx(0.15 * 800)
    assert mass_diameter_px(4, 3328, 0.07) == pytest.approx(4 / 0.07)  # physical size
    assert mass_diameter_px(40, 3328, 0.07) == pytest.approx(0.15 * 3328)


def test_round_mass_mask_is_the_half_maximum_disc():
    spec = MassSpec(kind="round", diameter_mm=10, diameter_px=40.0, contrast=0.1, edge=0.08, margin="ill_defined")
    image, mask = make_phantom(np.random.default_rng(1), (256, 224), "L", "CC", mass=spec)
    assert image.dtype == np.float32 and mask.dtype == bool
    assert 0.0 <= image.min() and image.max() <= 1.0
    # The sigmoid profile crosses half its maximum at the nominal radius: area pi * 20^2.
    assert mask.sum() == pytest.approx(np.pi * 20**2, rel=0.03)
    assert _crop_to_mask(mask).shape[0] in (39, 40, 41)
    assert _mass_brighter_than_ring(image, mask)


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_breast_lies_against_the_chest_wall_edge(laterality):
    phantom = render_phantom(np.random.default_rng(2), (160, 128), laterality, "MLO")
    chest, far = (0, -1) if laterality == "L" else (-1, 0)
    assert phantom.chest_side == ("left" if laterality == "L" else "right")
    assert phantom.breast[:, chest].mean() > 0.6  # touches the chest-wall edge over most rows
    assert not phantom.breast[:, far].any()  # the opposite edge is air
    assert not phantom.mask.any()  # no mass asked for, none drawn
    assert phantom.image[~phantom.breast].max() < phantom.image[phantom.breast].mean()


def test_plan_has_a_quarter_of_breasts_without_mass_and_cbis_none():
    plans = plan_dataset(12, "manifest", (1000, 800), seed=0)
    assert len(plans) == 48
    assert sum(not p.has_mass for p in plans) == 12  # 6 of 24 breasts, both views each
    assert any(len(p.masses) == 2 for p in plans)
    assert all(p.has_mass for p in plan_dataset(3, "cbis-ddsm", (1000, 800), seed=0))


# --- manifest layout ------------------------------------------------------------------------


def test_manifest_layout(manifest_dir):
    fields, rows = _rows(manifest_dir / "manifest.csv")
    assert fields == ["image", "mask", "patient_id", "view", "laterality", "id"]
    assert len(rows) == 12
    assert {(r["patient_id"], r["laterality"], r["view"]) for r in rows} == {
        (f"SYN{p:04d}", lat, view) for p in (1, 2, 3) for lat in "LR" for view in ("CC", "MLO")
    }
    without = [r for r in rows if not r["mask"]]
    assert 0 < len(without) < len(rows)
    for row in rows:
        assert row["image"] == f"images/{row['id']}.dcm" and (manifest_dir / row["image"]).is_file()
        if row["mask"]:
            assert row["mask"] == f"masks/{row['id']}.png"
            mask = read_png(manifest_dir / row["mask"])
            assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
            assert mask.shape == SHAPE
    assert sorted(p.name for p in (manifest_dir / "masks").iterdir()) == sorted(
        f"{r['id']}.png" for r in rows if r["mask"]
    )


def test_manifest_dicom_tags_cover_every_encoding(manifest_dir):
    _, rows = _rows(manifest_dir / "manifest.csv")
    photometric, voi, uids = set(), set(), set()
    for row in rows:
        ds = pydicom.dcmread(manifest_dir / row["image"])
        assert ds.Modality == "MG"
        assert ds.SOPClassUID in (MG_FOR_PRESENTATION, MG_FOR_PROCESSING)
        intent = "FOR PROCESSING" if ds.SOPClassUID == MG_FOR_PROCESSING else "FOR PRESENTATION"
        assert ds.PresentationIntentType == intent
        assert ds.BitsAllocated == 16 and 12 <= ds.BitsStored <= 14 and ds.HighBit == ds.BitsStored - 1
        assert ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1
        assert (ds.Rows, ds.Columns) == SHAPE
        assert int(ds.pixel_array.max()) < 2**ds.BitsStored
        assert all(0.07 <= float(v) <= 0.1 for v in ds.PixelSpacing)
        assert ds.ImageLaterality == row["laterality"] and ds.ViewPosition == row["view"]
        assert ds.PatientID == row["patient_id"]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        uids.add(ds.SOPInstanceUID)
        photometric.add(ds.PhotometricInterpretation)
        voi.add("lut" if "VOILUTSequence" in ds else "window" if "WindowCenter" in ds else "none")
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert voi == {"lut", "window", "none"}
    assert len(uids) == len(rows)


def test_manifest_windows_show_the_breast(manifest_dir):
    _, rows = _rows(manifest_dir / "manifest.csv")
    checked = 0
    for row in rows:
        ds = pydicom.dcmread(manifest_dir / row["image"])
        if "VOILUTSequence" not in ds and "WindowCenter" not in ds:
            continue
        density = _density(ds)
        air = density[:, 0] if row["laterality"] == "R" else density[:, -1]  # the edge away from the chest
        breast = density > air.max() + 0.05 * (density.max() - air.max())
        shown = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)  # pydicom's own VOI, first window
        if "VOILUTSequence" in ds:
            lo, hi = 0, 2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
        else:
            lo, hi = shown.min(), shown.max()
        clipped = (shown[breast] <= lo) | (shown[breast] >= hi)
        assert clipped.mean() < 0.05, row["id"]  # the window spans the tissue, not the air
        checked += 1
    assert checked >= 4


def test_manifest_masks_agree_with_image_and_views(manifest_dir):
    _, rows = _rows(manifest_dir / "manifest.csv")
    by_breast = defaultdict(dict)
    for row in rows:
        by_breast[(row["patient_id"], row["laterality"])][row["view"]] = row
    for (pid, lat), views in by_breast.items():
        assert bool(views["CC"]["mask"]) == bool(views["MLO"]["mask"]), (pid, lat)
        if not views["CC"]["mask"]:
            continue
        masks = {}
        for view, row in views.items():
            mask = read_png(manifest_dir / row["mask"]) > 0
            density = _density(pydicom.dcmread(manifest_dir / row["image"]))
            assert _mass_brighter_than_ring(density, mask), row["id"]
            masks[view] = mask
        # Same mass(es) in both views: identical shapes and sizes, at different places.
        assert _mass_shapes(masks["CC"]) == _mass_shapes(masks["MLO"]), (pid, lat)
        assert not np.array_equal(masks["CC"], masks["MLO"])


# --- INbreast layout -------------------------------------------------------------------------


def test_inbreast_layout_and_plists(inbreast_dir):
    names = sorted(p.name for p in (inbreast_dir / "AllDICOMs").iterdir())
    pattern = re.compile(r"^(\d{8})_([0-9a-f]{16})_MG_([LR])_(CC|ML)_ANON\.dcm$")
    assert len(names) == 12 and all(pattern.match(n) for n in names)
    parsed = [pattern.match(n).groups() for n in names]
    assert len({p[0] for p in parsed}) == 12  # file ids unique
    patients = defaultdict(set)
    for file_id, phash, lat, view in parsed:
        patients[phash].add((lat, view))
    assert len(patients) == 3 and all(v == {(a, b) for a in "LR" for b in ("CC", "ML")} for v in patients.values())

    xml_ids = {p.stem for p in (inbreast_dir / "AllXML").iterdir()}
    assert all(p.suffix == ".xml" for p in (inbreast_dir / "AllXML").iterdir())
    assert 0 < len(xml_ids) < 12 and xml_ids <= {p[0] for p in parsed}
    # Both views of a breast have an XML, or neither.
    for phash in patients:
        for lat in "LR":
            has = {view: fid in xml_ids for fid, h, la, view in parsed if h == phash and la == lat}
            assert has["CC"] == has["ML"]

    roi_names = set()
    for (file_id, phash, lat, view), name in zip(parsed, names):
        ds = pydicom.dcmread(inbreast_dir / "AllDICOMs" / name)
        assert ds.Modality == "MG" and ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 14
        assert "WindowCenter" not in ds and "VOILUTSequence" not in ds  # INbreast ships no VOI
        assert ds.ImageLaterality == lat and ds.ViewPosition == ("MLO" if view == "ML" else "CC")
        if file_id not in xml_ids:
            continue
        with open(inbreast_dir / "AllXML" / f"{file_id}.xml", "rb") as fh:
            plist = plistlib.load(fh)
        (image,) = plist["Images"]
        assert image["ImageIndexInStudy"] == 0 and image["NumberOfROIs"] == len(image["ROIs"])
        mask = np.zeros(SHAPE, dtype=np.uint8)
        for index, roi in enumerate(image["ROIs"]):
            roi_names.add(roi["Name"])
            assert roi["IndexInImage"] == index and roi["NumberOfPoints"] == len(roi["Point_px"])
            points = [tuple(float(v) for v in POINT.match(s).groups()) for s in roi["Point_px"]]
            assert POINT.match(roi["Center"])
            assert all(0 <= x < SHAPE[1] and 0 <= y < SHAPE[0] for x, y in points)
            if roi["Name"] == "Mass":
                assert len(points) >= 3 and roi["Area"] > 0
                cv2.fillPoly(mask, [np.rint(np.array(points)).astype(np.int32)], 1)
        assert mask.any()
        assert _mass_brighter_than_ring(_density(ds), mask.astype(bool)), name
    assert roi_names == {"Mass", "Calcification"}


# --- CBIS-DDSM layout ------------------------------------------------------------------------

OLD_PATH = re.compile(r"^(Mass-(Training|Test)_(P_\d{5})_(LEFT|RIGHT)_(CC|MLO)(_\d)?)/([\d.]+)/([\d.]+)/(00000[01])\.dcm$")


def _new_naming_file(root: Path, csv_path: str) -> Path:
    """Where an old-style CSV path lives in the current TCIA naming (UID tails name the folders)."""
    case, _, _, _, _, _, study, series, instance = OLD_PATH.match(csv_path).groups()
    hits = list((root / case).glob(f"*-DDSM-NA-{study[-5:]}/1.000000-*-{series[-5:]}/1-{int(instance) + 1}.dcm"))
    assert len(hits) == 1, csv_path
    return hits[0]


def test_cbis_layout_csvs_and_roi_files(cbis_dir):
    root = cbis_dir / "CBIS-DDSM"
    rows_by_split = {}
    for split in ("train", "test"):
        fields, rows = _rows(cbis_dir / f"mass_case_description_{split}_set.csv")
        assert fields == list(CBIS_CSV_COLUMNS)
        rows_by_split[split] = rows
    assert rows_by_split["train"] and rows_by_split["test"]
    assert all(r["image file path"].startswith("Mass-Training_") for r in rows_by_split["train"])
    assert all(r["image file path"].startswith("Mass-Test_") for r in rows_by_split["test"])
    assert not {r["patient_id"] for r in rows_by_split["train"]} & {r["patient_id"] for r in rows_by_split["test"]}

    rows = rows_by_split["train"] + rows_by_split["test"]
    swapped = 0
    abnormalities = defaultdict(list)
    for row in rows:
        for key in ("image file path", "cropped image file path", "ROI mask file path"):
            assert OLD_PATH.match(row[key]), row[key]
        case = OLD_PATH.match(row["image file path"]).group(1)
        assert case == f"{row['image file path'].split('_P_')[0]}_{row['patient_id']}_{row['left or right breast']}_{row['image view']}"
        assert row["abnormality type"] == "mass"
        abnormalities[case].append(row["abnormality id"])
        full = pydicom.dcmread(_new_naming_file(root, row["image file path"]))
        assert full.Modality == "MG" and full.file_meta.TransferSyntaxUID.is_little_endian
        listed_roi = pydicom.dcmread(_new_naming_file(root, row["ROI mask file path"]))
        listed_crop = pydicom.dcmread(_new_naming_file(root, row["cropped image file path"]))
        for ds in (listed_roi, listed_crop):
            assert OLD_PATH.match(row["ROI mask file path"]).group(1) == f"{case}_{row['abnormality id']}"
        full_size = (full.Rows, full.Columns)
        if (listed_roi.Rows, listed_roi.Columns) != full_size:
            swapped += 1
            listed_roi, listed_crop = listed_crop, listed_roi
        assert (listed_roi.Rows, listed_roi.Columns) == full_size
        assert listed_crop.Rows * listed_crop.Columns < full.Rows * full.Columns
        assert listed_roi.BitsAllocated == 8 and listed_roi.PhotometricInterpretation == "MONOCHROME2"
        roi = listed_roi.pixel_array
        assert set(np.unique(roi)) == {0, 255}
        assert _mass_brighter_than_ring(_density(full), roi > 0), row["image file path"]
    assert swapped >= 1  # some rows swap the cropped-image and ROI-mask paths, like the real CSVs
    assert any(ids == ["1", "2"] for ids in abnormalities.values())  # an image with two masses
    assert len(abnormalities) == 12  # every image of every patient is listed: all have a mass
    full_images = list(root.glob("*/*/1.000000-full mammogram images-*/1-1.dcm"))
    assert len(full_images) == 12


def test_cbis_old_naming_paths_exist_verbatim(tmp_path):
    out = tmp_path / "old"
    summary = write_synthetic_dataset(out, patients=2, fmt="cbis-ddsm", shape=(96, 80), seed=6, progress=False,
                                      style=SynthStyle(naming="old"))
    rows = _rows(out / "mass_case_description_train_set.csv")[1] + _rows(out / "mass_case_description_test_set.csv")[1]
    assert summary.n_images == 8 == summary.n_with_mass
    for row in rows:
        for key in ("image file path", "cropped image file path", "ROI mask file path"):
            assert (out / "CBIS-DDSM" / row[key]).is_file(), row[key]
    listed = {str(Path(r["image file path"])) for r in rows}
    on_disk = {str(p.relative_to(out / "CBIS-DDSM")) for p in summary.images}
    assert listed == on_disk


# --- determinism, overwrite, command line --------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("fmt", ["manifest", "inbreast", "cbis-ddsm"])
def test_same_seed_same_bytes_other_seed_other_pixels(tmp_path, fmt):
    a = write_synthetic_dataset(tmp_path / "a", patients=1, fmt=fmt, shape=(96, 80), seed=11, progress=False)
    write_synthetic_dataset(tmp_path / "b", patients=1, fmt=fmt, shape=(96, 80), seed=11, progress=False)
    c = write_synthetic_dataset(tmp_path / "c", patients=1, fmt=fmt, shape=(96, 80), seed=12, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for path_a, path_c in zip(a.images, c.images):
        assert not np.array_equal(pydicom.dcmread(path_a).pixel_array, pydicom.dcmread(path_c).pixel_array)


def test_refuses_non_empty_folder_and_overwrite_replaces_own_files(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic_dataset(out, patients=1, shape=(96, 80), progress=False)
    with pytest.raises(FileExistsError, match="never deletes"):  # --overwrite only in a folder synth wrote
        write_synthetic_dataset(out, patients=1, shape=(96, 80), progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    out = tmp_path / "synth"
    write_synthetic_dataset(out, patients=1, shape=(96, 80), progress=False)
    (out / "notes.txt").write_text("keep me")
    write_synthetic_dataset(out, patients=1, shape=(96, 80), progress=False, overwrite=True)
    assert (out / "manifest.csv").is_file()
    write_synthetic_dataset(out, patients=1, fmt="inbreast", shape=(96, 80), progress=False, overwrite=True)
    assert not (out / "manifest.csv").exists() and not (out / "images").exists()
    assert (out / "AllDICOMs").is_dir() and (out / "notes.txt").read_text() == "keep me"
    assert not list(out.rglob("*.tmp"))


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_synthetic_dataset(tmp_path / "x", fmt="dicomdir", progress=False)
    with pytest.raises(ValueError, match="patients"):
        write_synthetic_dataset(tmp_path / "x", patients=0, progress=False)
    with pytest.raises(ValueError, match="64x64"):
        write_synthetic_dataset(tmp_path / "x", shape=(32, 800), progress=False)
    assert parse_shape("4084x3328") == (4084, 3328)
    with pytest.raises(Exception, match="HxW"):
        parse_shape("4084")


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--patients", "1", "--shape", "96x80", "--format", "inbreast", "--seed", "2"]
    assert main(args) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert len(list((out / "AllDICOMs").glob("*.dcm"))) == 4
    assert main(args) == 2  # refuses the now non-empty folder
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_every_synthetic_dicom_reads_with_mammoseg(manifest_dir, inbreast_dir, cbis_dir):
    from mammoseg.dicom import read_mammogram

    files = [*sorted((manifest_dir / "images").glob("*.dcm")), *sorted((inbreast_dir / "AllDICOMs").glob("*.dcm")),
             *sorted((cbis_dir / "CBIS-DDSM").glob("*/*/1.000000-full mammogram images-*/1-1.dcm"))]
    for path in files:
        mammogram = read_mammogram(path)
        assert mammogram.pixels.dtype == np.uint16 and mammogram.pixels.shape == SHAPE
        assert mammogram.laterality in ("L", "R") and mammogram.view in ("CC", "MLO")
        # Dense tissue is bright after the reader's windowing: the chest-wall edge beats the air edge.
        chest, air = (0, -1) if mammogram.laterality == "L" else (-1, 0)
        assert mammogram.pixels[:, chest].mean() > mammogram.pixels[:, air].mean(), path


def test_markers_change_only_their_own_pixels_clear_of_the_breast(tmp_path):
    """A film label on every image and a collimator strip on every fourth: the rest of each image, and
    every mask, are those written without them; no mass lies under either."""
    import json

    from mammoseg.sources.synthetic.dataset import add_markers
    from mammoseg.sources.synthetic.phantom import LATERALITIES, VIEWS

    shape, seed = (200, 160), 8
    marked = write_synthetic_dataset(tmp_path / "marked", patients=1, shape=shape, seed=seed, progress=False)
    plain = write_synthetic_dataset(tmp_path / "plain", patients=1, shape=shape, seed=seed, progress=False,
                                    style=SynthStyle(markers=False))
    assert json.loads((tmp_path / "marked" / "synth.json").read_text())["markers"] is True
    assert "markers" not in json.loads((tmp_path / "plain" / "synth.json").read_text())
    assert [read_png(p).tobytes() for p in marked.annotations] == [read_png(p).tobytes() for p in plain.annotations]
    boxes = []
    for index, plan in enumerate(plan_dataset(1, "manifest", shape, seed)):
        rng = np.random.default_rng([seed, 104, plan.patient_index, LATERALITIES.index(plan.laterality),
                                     VIEWS.index(plan.view)])
        phantom = render_phantom(rng, shape, plan.laterality, plan.view, mass=plan.masses, breast=plan.breast)
        add_markers(seed, index, plan, phantom)
        assert phantom.label_box is not None and (phantom.border_box is not None) == (index % 4 == 3)
        drawn = np.zeros(shape, bool)
        for r0, r1, c0, c1 in filter(None, (phantom.label_box, phantom.border_box)):
            drawn[r0:r1, c0:c1] = True
        assert not (drawn & (phantom.breast | phantom.mask)).any()
        a = pydicom.dcmread(marked.images[index]).pixel_array
        b = pydicom.dcmread(plain.images[index]).pixel_array
        assert (a != b).any() and not (a != b)[~drawn].any()
        boxes.append(phantom.label_box)
    assert len(set(boxes)) > 1  # placed where each image has room, not at one spot


def test_cli_synth_without_markers(tmp_path):
    args = ["synth", "--out", str(tmp_path / "a"), "--patients", "1", "--shape", "96x80", "--seed", "2"]
    assert main([*args, "--no-markers"]) == 0
    plain = write_synthetic_dataset(tmp_path / "b", patients=1, shape=(96, 80), seed=2, progress=False,
                                    style=SynthStyle(markers=False))
    for path in plain.images:
        assert (tmp_path / "a" / path.relative_to(tmp_path / "b")).read_bytes() == path.read_bytes()
