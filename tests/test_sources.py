"""Sources: manifest CSV, INbreast plist polygons, CBIS-DDSM trees (old and new naming)."""

from __future__ import annotations

import pickle
import plistlib
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_mg

from mammoseg.io import write_png
from mammoseg.sources import iter_records
from mammoseg.sources.inbreast import parse_point, read_mass_polygons
from mammoseg.sources.records import NoMask, PngMask, PolygonMask


def write_dicom(path: Path, pixels: np.ndarray, patient_id: str = "P", **extra) -> Path:
    """A minimal MG DICOM holding `pixels` (uint8 or uint16) as MONOCHROME2."""
    return write_mg(path, pixels, PatientID=patient_id, **extra)


# --------------------------------------------------------------------------- manifest


def _manifest_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    img16 = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 7
    write_png(root / "img" / "a.png", img16)
    write_png(root / "img" / "b.png", np.full((64, 80), 100, np.uint8))
    write_dicom(root / "img" / "c.dcm", np.ones((70, 60), np.uint16), patient_id="DCMPAT")
    mask = np.zeros((64, 80), np.uint8)
    mask[10:20, 30:45] = 1  # any non-zero value is mass
    write_png(root / "masks" / "a.png", mask)
    cmask = np.zeros((70, 60), np.uint8)
    cmask[5, 6] = 255
    cmask_path = tmp_path / "elsewhere" / "c_mask.png"
    write_png(cmask_path, cmask)
    csv = root / "list.csv"
    csv.write_text(
        "image,mask,patient_id,view,laterality,id\n"
        "img/a.png,masks/a.png,p1,cc,LEFT,\n"
        "img/b.png,,p1,MLO,r,bee\n"
        f"img/c.dcm,{cmask_path},p2,,,\n"
    )
    return csv


def test_manifest_records_paths_and_fields(tmp_path):
    csv = _manifest_fixture(tmp_path)
    records = list(iter_records("manifest", csv.parent))  # the one CSV in the folder is found
    assert [r.id for r in records] == ["a", "bee", "c"]
    a, b, c = records
    assert a.image == csv.parent / "img" / "a.png" and a.image.is_absolute()
    assert (a.patient_id, a.view, a.laterality, a.source) == ("p1", "CC", "L", "manifest")
    assert (b.view, b.laterality) == ("MLO", "R")
    assert isinstance(b.mask, NoMask) and not b.load_mask(64, 80).any()
    assert isinstance(c.mask, PngMask) and c.mask.path == tmp_path / "elsewhere" / "c_mask.png"
    expected = np.zeros((64, 80), bool)
    expected[10:20, 30:45] = True
    np.testing.assert_array_equal(a.load_mask(64, 80), expected)
    cm = c.load_mask(70, 60)
    assert cm.sum() == 1 and cm[5, 6]
    # Records travel to worker processes.
    assert pickle.loads(pickle.dumps(records)) == records


def test_manifest_mask_size_mismatch_is_a_clear_error(tmp_path):
    csv = _manifest_fixture(tmp_path)
    a = next(iter(iter_records("manifest", csv)))
    with pytest.raises(ValueError, match=r"a\.png.*64x80.*65x80"):
        a.load_mask(65, 80)


def test_manifest_missing_column_names_csv_and_column(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("image,mask\nx.png,\n")
    with pytest.raises(ValueError, match=r"m\.csv.*patient_id"):
        list(iter_records("manifest", csv))
    empty = tmp_path / "e.csv"
    empty.write_text("image,patient_id\n")
    with pytest.raises(ValueError, match=r"e\.csv.*mask"):
        list(iter_records("manifest", empty))


def test_manifest_duplicate_ids_made_unique_and_bad_option(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("image,mask,patient_id\nx/scan.png,,p\ny/scan.png,,q\nz/Scan.png,,q\n")
    assert [r.id for r in iter_records("manifest", csv)] == ["scan", "scan_2", "Scan_3"]
    with pytest.raises(ValueError, match="manifest"):
        list(iter_records("manifest", csv, mass_names=("Mass",)))
    with pytest.raises(ValueError, match="unknown source format"):
        list(iter_records("dicomdir", csv))


# --------------------------------------------------------------------------- INbreast


def _write_xml(path: Path, rois: list[tuple[str, list[str]]]) -> None:
    plist = {
        "Images": [
            {
                "ImageIndex": 0,
                "NumberOfROIs": len(rois),
                "ROIs": [{"Name": name, "Point_px": points, "NumberOfPoints": len(points)} for name, points in rois],
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plistlib.dumps(plist, fmt=plistlib.FMT_XML))


def _inbreast_fixture(tmp_path: Path) -> Path:
    src = tmp_path / "INbreast"
    for name in (
        "20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm",
        "20586934_6c613a14b80a8591_MG_L_ML_ANON.dcm",
        "22614236_aaaa_MG_L_CC_ANON.dcm",
    ):
        write_dicom(src / "AllDICOMs" / name, np.zeros((40, 30), np.uint16))
    square = ["(2, 3)", "(10, 3)", "(10, 12)", "(2, 12)"]
    triangle = ["(15.4, 20)", "(25, 20.3)", "(14.6, 29.6)"]  # rounds to (15,20) (25,20) (15,30)
    _write_xml(
        src / "AllXML" / "20586908.xml",
        [("Mass", square), ("Calcification", ["(1, 1)"]), ("Cluster", ["(0, 0)", "(5, 0)", "(5, 5)"]), ("mass", triangle)],
    )
    _write_xml(src / "AllXML" / "20586934.xml", [("Calcification", ["(3, 3)"])])
    return src


def test_inbreast_polygons_filled_exactly(tmp_path):
    src = _inbreast_fixture(tmp_path)
    records = list(iter_records("inbreast", src))
    assert [r.id for r in records] == ["20586908", "20586934", "22614236"]
    first = records[0]
    assert (first.patient_id, first.laterality, first.view, first.source) == ("6c613a14b80a8591", "R", "CC", "inbreast")
    assert records[1].view == "MLO" and records[1].laterality == "L"
    assert isinstance(first.mask, PolygonMask)
    mask = first.load_mask(40, 30)
    # Independent answer: the square covers columns 2..10 and rows 3..12, boundary included;
    # the right triangle (15,20)-(25,20)-(15,30) covers dx, dy >= 0 with dx + dy <= 10.
    rows, cols = np.mgrid[0:40, 0:30]
    square = (cols >= 2) & (cols <= 10) & (rows >= 3) & (rows <= 12)
    triangle = (cols >= 15) & (rows >= 20) & ((cols - 15) + (rows - 20) <= 10)
    np.testing.assert_array_equal(mask, square | triangle)
    assert mask.sum() == 9 * 10 + 66


def test_inbreast_non_mass_rois_and_missing_xml_give_empty_masks(tmp_path):
    src = _inbreast_fixture(tmp_path)
    _, calc_only, no_xml = iter_records("inbreast", src)
    assert isinstance(calc_only.mask, NoMask) and not calc_only.load_mask(40, 30).any()
    assert isinstance(no_xml.mask, NoMask)


def test_inbreast_mass_names_configurable(tmp_path):
    src = _inbreast_fixture(tmp_path)
    _, calc_only, _ = iter_records("inbreast", src, mass_names=("Calcification",))
    mask = calc_only.load_mask(40, 30)
    assert mask.sum() == 1 and mask[3, 3]
    polygons = read_mass_polygons(src / "AllXML" / "20586908.xml", ("Cluster",))
    assert polygons == (((0.0, 0.0), (5.0, 0.0), (5.0, 5.0)),)
    assert parse_point("(1.5, -2e1)") == (1.5, -20.0)
    with pytest.raises(ValueError, match="x.xml"):
        parse_point("1;2", "x.xml")


def test_inbreast_broken_xml_is_a_record_problem(tmp_path):
    src = _inbreast_fixture(tmp_path)
    (src / "AllXML" / "20586934.xml").write_text("<plist><dict>")
    records = list(iter_records("inbreast", src))
    assert records[1].problem.startswith(str(src / "AllXML" / "20586934.xml"))
    assert records[0].problem == "" and records[2].problem == ""


# --------------------------------------------------------------------------- CBIS-DDSM

H, W = 48, 40
CSV_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
    "mass shape,mass margins,assessment,pathology,subtlety,image file path,"
    "cropped image file path,ROI mask file path\n"
)


def _roi(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[r0:r1, c0:c1] = 255
    return m


def _cbis_fixture(root: Path) -> dict[str, np.ndarray]:
    """Old naming (two abnormalities, one with swapped CSV paths) and new naming (one)."""
    u = "1.3.6.1.4.1.9590.100.1.2"
    # Old naming, training image with two ROIs.
    img_old = f"Mass-Training_P_00001_LEFT_CC/{u}.1/{u}.2/000000.dcm"
    write_dicom(root / img_old, np.full((H, W), 500, np.uint16), patient_id="P_00001")
    roi1, roi2 = _roi(5, 15, 5, 12), _roi(30, 40, 20, 35)
    # Abnormality 1 as the CSV states it: 000000 is the crop, 000001 the mask.
    write_dicom(root / f"Mass-Training_P_00001_LEFT_CC_1/{u}.3/{u}.4/000000.dcm", np.ones((10, 7), np.uint16))
    write_dicom(root / f"Mass-Training_P_00001_LEFT_CC_1/{u}.3/{u}.4/000001.dcm", roi1)
    # Abnormality 2 on disk the other way round: the CSV's "ROI mask" path is the crop.
    write_dicom(root / f"Mass-Training_P_00001_LEFT_CC_2/{u}.5/{u}.6/000000.dcm", roi2)
    write_dicom(root / f"Mass-Training_P_00001_LEFT_CC_2/{u}.5/{u}.6/000001.dcm", np.ones((10, 15), np.uint16))
    # New naming, test image, mask and crop in separate series folders.
    write_dicom(
        root / "Mass-Test_P_00016_RIGHT_MLO/10-04-2016-DDSM-30486/1.000000-full mammogram images-14172/1-1.dcm",
        np.full((H, W), 9, np.uint16),
        patient_id="P_00016",
    )
    roi3 = _roi(0, 6, 0, 40)
    write_dicom(root / "Mass-Test_P_00016_RIGHT_MLO_1/10-04-2016-DDSM-12345/1.000000-ROI mask images-1/1-1.dcm", roi3)
    write_dicom(root / "Mass-Test_P_00016_RIGHT_MLO_1/10-04-2016-DDSM-12345/2.000000-cropped images-2/1-1.dcm", np.ones((6, 40), np.uint16))
    # A case whose folder is missing from the tree.
    train_csv = CSV_HEADER + (
        f"P_00001,3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,4,MALIGNANT,4,{img_old},"
        f"Mass-Training_P_00001_LEFT_CC_1/{u}.3/{u}.4/000000.dcm,"
        f"\"Mass-Training_P_00001_LEFT_CC_1/{u}.3/{u}.4/000001.dcm\n\"\n"
        f"P_00001,3,LEFT,CC,2,mass,OVAL,CIRCUMSCRIBED,4,MALIGNANT,4,{img_old},"
        f"Mass-Training_P_00001_LEFT_CC_2/{u}.5/{u}.6/000000.dcm,"
        f"Mass-Training_P_00001_LEFT_CC_2/{u}.5/{u}.6/000001.dcm\n"
        f"P_00009,2,RIGHT,CC,1,mass,OVAL,CIRCUMSCRIBED,4,BENIGN,3,"
        f"Mass-Training_P_00009_RIGHT_CC/{u}.7/{u}.8/000000.dcm,"
        f"Mass-Training_P_00009_RIGHT_CC_1/{u}.9/{u}.10/000000.dcm,"
        f"Mass-Training_P_00009_RIGHT_CC_1/{u}.9/{u}.10/000001.dcm\n"
    )
    # The newer CSVs still carry old-style paths: only the first component is used.
    test_csv = CSV_HEADER + (
        f"P_00016,2,RIGHT,MLO,1,mass,IRREGULAR,SPICULATED,5,MALIGNANT,5,"
        f"Mass-Test_P_00016_RIGHT_MLO/{u}.11/{u}.12/000000.dcm,"
        f"Mass-Test_P_00016_RIGHT_MLO_1/{u}.13/{u}.14/000000.dcm,"
        f"Mass-Test_P_00016_RIGHT_MLO_1/{u}.13/{u}.14/000001.dcm\n"
    )
    return {"train_csv": train_csv, "test_csv": test_csv, "old": roi1 | roi2, "new": roi3}


@pytest.mark.parametrize("nested", [False, True])
def test_cbis_merges_rois_picks_by_size_old_and_new_naming(tmp_path, nested):
    src = tmp_path / "cbis"
    tree = src / "CBIS-DDSM" if nested else src
    fx = _cbis_fixture(tree)
    (src / "mass_case_description_train_set.csv").write_text(fx["train_csv"])
    (src / "mass_case_description_test_set.csv").write_text(fx["test_csv"])
    records = {r.id: r for r in iter_records("cbis-ddsm", src)}
    assert sorted(records) == ["Mass-Test_P_00016_RIGHT_MLO", "Mass-Training_P_00001_LEFT_CC", "Mass-Training_P_00009_RIGHT_CC"]
    old = records["Mass-Training_P_00001_LEFT_CC"]
    assert (old.patient_id, old.laterality, old.view, old.source, old.split) == ("P_00001", "L", "CC", "cbis-ddsm", "")
    assert old.image.name == "000000.dcm" and old.problem == ""
    np.testing.assert_array_equal(old.load_mask(H, W), fx["old"] > 0)
    new = records["Mass-Test_P_00016_RIGHT_MLO"]
    assert new.image.name == "1-1.dcm" and "full mammogram" in str(new.image)
    np.testing.assert_array_equal(new.load_mask(H, W), fx["new"] > 0)
    missing = records["Mass-Training_P_00009_RIGHT_CC"]
    assert "Mass-Training_P_00009_RIGHT_CC" in missing.problem and "no case folder" in missing.problem


def test_cbis_official_split_and_named_csv(tmp_path):
    src = tmp_path / "cbis"
    fx = _cbis_fixture(src)
    csv_dir = tmp_path / "csvs"
    csv_dir.mkdir()
    (csv_dir / "mass_case_description_test_set.csv").write_text(fx["test_csv"])
    with pytest.raises(FileNotFoundError, match="--csv"):
        list(iter_records("cbis-ddsm", src))
    records = list(iter_records("cbis-ddsm", src, csv=[csv_dir / "mass_case_description_test_set.csv"], keep_official_split=True))
    assert [(r.id, r.split) for r in records] == [("Mass-Test_P_00016_RIGHT_MLO", "holdout")]
    (src / "mass_case_description_train_set.csv").write_text(fx["train_csv"])
    splits = {r.id: r.split for r in iter_records("cbis-ddsm", src, keep_official_split=True)}
    assert splits["Mass-Training_P_00001_LEFT_CC"] == "train"


def test_cbis_no_roi_of_the_image_size_is_a_clear_error(tmp_path):
    src = tmp_path / "cbis"
    fx = _cbis_fixture(src)
    (src / "mass_case_description_train_set.csv").write_text(fx["train_csv"])
    old = next(r for r in iter_records("cbis-ddsm", src) if r.id == "Mass-Training_P_00001_LEFT_CC")
    with pytest.raises(ValueError, match=r"Mass-Training_P_00001_LEFT_CC_1.*49x40"):
        old.load_mask(H + 1, W)
