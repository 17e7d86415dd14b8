"""The public folder layouts (manifest, INbreast, CBIS-DDSM): one writer each (`WRITERS`).

A writer stores each phantom `mammoseg.sources.synthetic.dataset` hands it as DICOM (plus masks,
XML annotations or CSVs) exactly where the matching reader in `mammoseg.sources` looks for it.
"""

from __future__ import annotations

import hashlib
import plistlib
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from mammoseg.io import write_bytes_atomic, write_csv_atomic, write_png
from mammoseg.layouts import MANIFEST_CSV
from mammoseg.sources.synthetic.dicom_writer import (
    SECONDARY_CAPTURE,
    DicomInfo,
    Encoding,
    stable_uid,
    tissue_window,
    to_stored_values,
    write_dicom,
)
from mammoseg.sources.synthetic.phantom import (
    LATERALITIES,
    VIEWS,
    Phantom,
    add_calcifications,
)
from mammoseg.sources.synthetic.plan import ImagePlan


#: Manifest CSV columns written by the `manifest` layout.
MANIFEST_CSV_COLUMNS: tuple[str, ...] = ("image", "mask", "patient_id", "view", "laterality", "id")
#: Columns of CBIS-DDSM's mass description CSVs, in the dataset's order.
CBIS_CSV_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
#: CBIS-DDSM's mass description CSV of each split.
CBIS_CSV_NAMES = {"train": "mass_case_description_train_set.csv", "test": "mass_case_description_test_set.csv"}
#: Top-level entries this generator owns in its output folder (removed by `overwrite=True`).
OWNED_ENTRIES = (
    "images",
    "masks",
    MANIFEST_CSV,
    "AllDICOMs",
    "AllXML",
    "CBIS-DDSM",
    *CBIS_CSV_NAMES.values(),
    "synth.json",
)


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic_dataset` wrote."""

    out: Path
    fmt: str
    n_images: int
    n_with_mass: int
    n_patients: int
    images: tuple[Path, ...]  # the image DICOM files
    annotations: tuple[Path, ...] = ()  # mask PNGs, INbreast XMLs or CBIS ROI/crop DICOMs
    index_files: tuple[Path, ...] = ()  # manifest.csv or the CBIS CSVs


def _study_date(seed: int, patient: int) -> tuple[str, str]:
    """(DICOM date YYYYMMDD, CBIS folder date MM-DD-YYYY) for one patient's study."""
    rng = np.random.default_rng([seed, 103, patient])
    year, month, day = 2016, int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"{year}{month:02d}{day:02d}", f"{month:02d}-{day:02d}-{year}"


class _LayoutWriter:
    """Shared bookkeeping of the three layout writers."""

    fmt = ""  # the layout's `--format` name

    def __init__(self, out: Path, seed: int, shape: tuple[int, int], patients: int, naming: str) -> None:
        self.out, self.seed, self.shape, self.patients, self.naming = out, seed, shape, patients, naming
        self.images: list[Path] = []
        self.annotations: list[Path] = []
        self.index_files: list[Path] = []
        self.n_with_mass = 0

    def uid(self, *parts: object) -> str:
        return stable_uid(self.seed, self.fmt, self.shape, *parts)

    def encode(self, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
        stored = to_stored_values(phantom.image, plan.encoding, rng)
        return stored, tissue_window(stored, phantom.breast, plan.encoding.bits)

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def finish(self) -> SynthSummary:
        return SynthSummary(
            out=self.out, fmt=self.fmt, n_images=len(self.images), n_with_mass=self.n_with_mass,
            n_patients=self.patients, images=tuple(self.images), annotations=tuple(self.annotations),
            index_files=tuple(self.index_files),
        )


class _ManifestWriter(_LayoutWriter):
    """`images/<id>.dcm`, `masks/<id>.png` (0/255) and `manifest.csv` (empty mask = no mass)."""

    fmt = "manifest"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.rows: list[dict[str, str]] = []

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        pid = f"SYN{plan.patient_index + 1:04d}"
        image_id = f"{pid}_{plan.laterality}_{plan.view}"
        stored, window = self.encode(plan, phantom, rng)
        date, _ = _study_date(self.seed, plan.patient_index)
        info = DicomInfo(
            patient_id=pid, study_uid=self.uid("study", plan.patient_index),
            series_uid=self.uid("series", plan.patient_index, plan.laterality, plan.view),
            sop_uid=self.uid("image", plan.patient_index, plan.laterality, plan.view),
            laterality=plan.laterality, view=plan.view, study_date=date, acquisition=plan.acquisition,
            series_number=1 + 2 * LATERALITIES.index(plan.laterality) + VIEWS.index(plan.view),
        )
        image_path = self.out / "images" / f"{image_id}.dcm"
        write_dicom(image_path, stored, info, plan.encoding, window)
        self.images.append(image_path)
        mask_cell = ""
        if plan.has_mass:
            mask_path = self.out / "masks" / f"{image_id}.png"
            write_png(mask_path, phantom.mask.astype(np.uint8) * 255)
            self.annotations.append(mask_path)
            mask_cell = f"masks/{image_id}.png"
            self.n_with_mass += 1
        self.rows.append({"image": f"images/{image_id}.dcm", "mask": mask_cell, "patient_id": pid,
                          "view": plan.view, "laterality": plan.laterality, "id": image_id})

    def finish(self) -> SynthSummary:
        path = self.out / MANIFEST_CSV
        write_csv_atomic(path, self.rows, MANIFEST_CSV_COLUMNS)
        self.index_files.append(path)
        return super().finish()


def _contour_points(mask: np.ndarray) -> list[tuple[float, float]]:
    """Outline of the (single-component) mask as (x, y) pixel centres, in drawing order."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    largest = max(contours, key=len)
    return [(float(x), float(y)) for x, y in largest[:, 0, :]]


def _point(x: float, y: float) -> str:
    """A point as INbreast writes it: `(x, y)` with six decimals."""
    return f"({x:.6f}, {y:.6f})"


class _INbreastWriter(_LayoutWriter):
    """`AllDICOMs/<fileid>_<patienthash>_MG_<L|R>_<CC|ML>_ANON.dcm` and `AllXML/<fileid>.xml` plists."""

    fmt = "inbreast"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        rng = np.random.default_rng([self.seed, 105])
        n = 4 * self.patients
        ids: list[int] = []
        seen: set[int] = set()
        while len(ids) < n:
            candidate = int(rng.integers(20_000_000, 54_000_000))
            if candidate not in seen:
                seen.add(candidate)
                ids.append(candidate)
        self.file_ids = ids

    def patient_hash(self, patient: int) -> str:
        return hashlib.sha256(f"mammoseg-synth/{self.seed}/{patient}".encode()).hexdigest()[:16]

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        file_id = f"{self.file_ids[index]:08d}"
        phash = self.patient_hash(plan.patient_index)
        view_code = "ML" if plan.view == "MLO" else plan.view
        calcs: list[tuple[float, float]] = []
        image = phantom.image
        if plan.has_mass and rng.random() < 0.5:
            image, calcs = add_calcifications(rng, image, phantom.breast & ~_dilate(phantom.mask, 5))
        stored = to_stored_values(image, plan.encoding, rng)
        date, _ = _study_date(self.seed, plan.patient_index)
        info = DicomInfo(
            patient_id=phash, study_uid=self.uid("study", plan.patient_index),
            series_uid=self.uid("series", plan.patient_index, plan.laterality, plan.view),
            sop_uid=self.uid("image", plan.patient_index, plan.laterality, plan.view),
            laterality=plan.laterality, view=plan.view, study_date=date, instance_number=index + 1,
            acquisition=plan.acquisition,
        )
        path = self.out / "AllDICOMs" / f"{file_id}_{phash}_MG_{plan.laterality}_{view_code}_ANON.dcm"
        write_dicom(path, stored, info, plan.encoding)  # INbreast carries no VOI
        self.images.append(path)
        if plan.has_mass:
            self.n_with_mass += 1
            xml = self.out / "AllXML" / f"{file_id}.xml"
            write_bytes_atomic(xml, plistlib.dumps(_inbreast_plist(phantom, calcs, stored, plan.encoding.spacing)))
            self.annotations.append(xml)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` grown by a disc of `radius` pixels."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _inbreast_plist(phantom: Phantom, calcs: list[tuple[float, float]], stored: np.ndarray, spacing: float) -> dict:
    """INbreast's annotation plist: Images[0].ROIs with Mass polygons and Calcification points."""
    rois = []
    for mask in phantom.mass_masks:
        points = _contour_points(mask)
        rows, cols = np.nonzero(mask)
        values = stored[mask].astype(np.float64)
        rois.append({
            "Area": float(mask.sum() * spacing * spacing),
            "Center": _point(float(cols.mean()), float(rows.mean())),
            "Dev": float(values.std()),
            "IndexInImage": len(rois),
            "Max": float(values.max()),
            "Mean": float(values.mean()),
            "Min": float(values.min()),
            "Name": "Mass",
            "NumberOfPoints": len(points),
            "Point_mm": [_point(x * spacing, y * spacing) for x, y in points],
            "Point_px": [_point(x, y) for x, y in points],
            "Total": float(values.sum()),
            "Type": 15,
        })
    for x, y in calcs:
        value = float(stored[int(y), int(x)])
        rois.append({
            "Area": 0.0, "Center": _point(x, y), "Dev": 0.0, "IndexInImage": len(rois), "Max": value,
            "Mean": value, "Min": value, "Name": "Calcification", "NumberOfPoints": 1,
            "Point_mm": [_point(x * spacing, y * spacing)], "Point_px": [_point(x, y)], "Total": value, "Type": 19,
        })
    return {"Images": [{"ImageIndex": 0, "ImageIndexInStudy": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}


_CBIS_SHAPE = {"round": ("ROUND", "OVAL"), "lobulated": ("LOBULATED",), "spiculated": ("IRREGULAR",)}
_CBIS_MARGIN = {"circumscribed": "CIRCUMSCRIBED", "ill_defined": "ILL_DEFINED", "spiculated": "SPICULATED"}


class _CbisWriter(_LayoutWriter):
    """The TCIA CBIS-DDSM tree (new or old naming) and the two mass description CSVs."""

    fmt = "cbis-ddsm"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        # The last ~20 % of the patients (at least one when there are two or more) form the test set.
        n_test = max(1, int(round(0.2 * self.patients))) if self.patients >= 2 else 0
        self.test_patients = set(range(self.patients - n_test, self.patients))
        self.rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
        self.root = self.out / "CBIS-DDSM"
        self.n_swapped = 0

    def _file(self, case: str, study_uid: str, folder_date: str, series_uid: str, series_label: str,
              instance: int) -> tuple[Path, str]:
        """(path on disk in the chosen naming, path as the CSV writes it: old UID style)."""
        csv_path = f"{case}/{study_uid}/{series_uid}/{instance:06d}.dcm"
        if self.naming == "old":
            return self.root / csv_path, csv_path
        study_folder = f"{folder_date}-DDSM-NA-{study_uid[-5:]}"
        series_folder = f"1.000000-{series_label}-{series_uid[-5:]}"
        return self.root / case / study_folder / series_folder / f"1-{instance + 1}.dcm", csv_path

    def add(self, index: int, plan: ImagePlan, phantom: Phantom, rng: np.random.Generator) -> None:
        p = plan.patient_index
        split = "test" if p in self.test_patients else "train"
        pid = f"P_{p + 1:05d}"
        side = "LEFT" if plan.laterality == "L" else "RIGHT"
        case = f"Mass-{'Test' if split == 'test' else 'Training'}_{pid}_{side}_{plan.view}"
        stored, window = self.encode(plan, phantom, rng)
        date, folder_date = _study_date(self.seed, p)
        study = self.uid("study", p, plan.laterality, plan.view)
        series = self.uid("series", p, plan.laterality, plan.view)
        path, image_csv = self._file(case, study, folder_date, series, "full mammogram images", 0)
        info = DicomInfo(patient_id=case, study_uid=study, series_uid=series,
                         sop_uid=self.uid("image", p, plan.laterality, plan.view), laterality=plan.laterality,
                         view=plan.view, study_date=date, series_description="full mammogram images",
                         acquisition=plan.acquisition)
        write_dicom(path, stored, info, plan.encoding, window)
        self.images.append(path)
        if plan.has_mass:
            self.n_with_mass += 1
        density = 1 + min(3, int(plan.breast.density / 0.55 * 4))
        for j, (mass, mask) in enumerate(zip(plan.masses, phantom.mass_masks), start=1):
            crop_csv, roi_csv = self._write_abnormality(case, j, plan, mask, stored, rng)
            # The real CSVs swap the cropped-image and ROI-mask paths in places; so do these
            # (about a quarter of the rows, and always the second row when none before it was).
            n_rows = len(self.rows["train"]) + len(self.rows["test"])
            swapped = rng.random() < 0.25 or (self.n_swapped == 0 and n_rows == 1)
            if swapped:
                self.n_swapped += 1
                crop_csv, roi_csv = roi_csv, crop_csv
            malignant = mass.kind == "spiculated" or rng.random() < 0.35
            self.rows[split].append({
                "patient_id": pid,
                "breast_density": str(density),
                "left or right breast": side,
                "image view": plan.view,
                "abnormality id": str(j),
                "abnormality type": "mass",
                "mass shape": str(rng.choice(_CBIS_SHAPE[mass.kind])),
                "mass margins": _CBIS_MARGIN[mass.margin],
                "assessment": str(int(rng.integers(4, 6)) if malignant else int(rng.integers(2, 5))),
                "pathology": "MALIGNANT" if malignant else str(rng.choice(["BENIGN", "BENIGN_WITHOUT_CALLBACK"])),
                "subtlety": str(int(np.clip(round(1 + 4 * (mass.contrast - 0.06) / 0.06), 1, 5))),
                "image file path": image_csv,
                "cropped image file path": crop_csv,
                "ROI mask file path": roi_csv,
            })

    def _write_abnormality(self, case: str, j: int, plan: ImagePlan, mask: np.ndarray, stored: np.ndarray,
                           rng: np.random.Generator) -> tuple[str, str]:
        """Write abnormality `j`'s ROI mask (full size, 0/255) and cropped image; return their CSV paths."""
        roi_case = f"{case}_{j}"
        p = plan.patient_index
        date, folder_date = _study_date(self.seed, p)
        key = (p, plan.laterality, plan.view, j)
        study = self.uid("roi-study", *key)
        rows, cols = np.nonzero(mask)
        margin = int(0.15 * (np.ptp(rows) + np.ptp(cols)) / 2) + 2
        y0, y1 = max(0, rows.min() - margin), min(mask.shape[0], rows.max() + margin + 1)
        x0, x1 = max(0, cols.min() - margin), min(mask.shape[1], cols.max() + margin + 1)
        crop = np.ascontiguousarray(stored[y0:y1, x0:x1])
        roi = mask.astype(np.uint8) * 255
        layout = rng.random()
        if layout < 0.3:
            # Crop and mask in two series of their own ("cropped images", "ROI mask images").
            crop_series, roi_series = self.uid("crop-series", *key), self.uid("roi-series", *key)
            crop_label, crop_index, roi_index = "cropped images", 0, 0
        else:
            # One series holding both; which instance is the mask varies, as in the real data.
            crop_series = roi_series = self.uid("roi-series", *key)
            crop_label = "ROI mask images"
            crop_index, roi_index = (0, 1) if layout < 0.65 else (1, 0)
        crop_path, crop_csv = self._file(roi_case, study, folder_date, crop_series, crop_label, crop_index)
        roi_path, roi_csv = self._file(roi_case, study, folder_date, roi_series, "ROI mask images", roi_index)
        crop_info = DicomInfo(patient_id=roi_case, study_uid=study, series_uid=crop_series,
                              sop_uid=self.uid("crop", *key), laterality=plan.laterality, view=plan.view,
                              study_date=date, series_description="cropped images", sop_class=SECONDARY_CAPTURE,
                              instance_number=1 + crop_index)
        roi_info = replace(crop_info, series_uid=roi_series, sop_uid=self.uid("roi", *key),
                           series_description="ROI mask images", instance_number=1 + roi_index)
        crop_encoding = Encoding(bits=plan.encoding.bits, photometric=plan.encoding.photometric, voi="none",
                                 spacing=plan.encoding.spacing)
        mask_encoding = Encoding(bits=8, photometric="MONOCHROME2", voi="none", spacing=plan.encoding.spacing)
        write_dicom(crop_path, crop, crop_info, crop_encoding)
        write_dicom(roi_path, roi, roi_info, mask_encoding)
        self.annotations += [roi_path, crop_path]
        return crop_csv, roi_csv

    def finish(self) -> SynthSummary:
        for split, name in CBIS_CSV_NAMES.items():
            path = self.out / name
            write_csv_atomic(path, self.rows[split], CBIS_CSV_COLUMNS)
            self.index_files.append(path)
        return super().finish()


#: The writer of each `--format`.
WRITERS: dict[str, type[_LayoutWriter]] = {"manifest": _ManifestWriter, "inbreast": _INbreastWriter,
                                           "cbis-ddsm": _CbisWriter}
