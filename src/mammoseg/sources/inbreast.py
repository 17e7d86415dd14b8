"""INbreast source: `AllDICOMs/` images and `AllXML/` Apple-plist contour annotations.

File names are `<fileid>_<patient>_MG_<L|R>_<CC|ML>_ANON.dcm`; the annotation of an image
is `AllXML/<fileid>.xml`, whose `Images[0].ROIs[*]` carry a `Name` and `Point_px` strings
"(x, y)" in pixels. ROIs named as masses (default `Mass`) become filled polygons; other
ROI types (calcifications, clusters, ...) are not masses, and an image without an XML has
no mass.
"""

from __future__ import annotations

import os
import plistlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from mammoseg.manifest import safe_id
from mammoseg.sources.records import (
    NoMask,
    PolygonMask,
    Record,
    normalise_laterality,
    normalise_view,
)

_POINT = re.compile(r"^\s*\(?\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)?\s*$")


def parse_point(text: str, where: str = "") -> tuple[float, float]:
    """`"(x, y)"` → (x, y) floats."""
    match = _POINT.match(str(text))
    if not match:
        raise ValueError(f"{where}: cannot parse point {text!r}; expected '(x, y)'")
    return float(match.group(1)), float(match.group(2))


def read_mass_polygons(
    xml_path: str | os.PathLike, mass_names: Sequence[str] = ("Mass",)
) -> tuple[tuple[tuple[float, float], ...], ...]:
    """The mass polygons of one INbreast XML (empty when it annotates no mass)."""
    xml_path = Path(xml_path)
    try:
        with open(xml_path, "rb") as fh:
            plist = plistlib.load(fh)
    except Exception as exc:
        raise ValueError(f"{xml_path}: not a readable INbreast plist XML ({exc})") from exc
    try:
        images = plist["Images"]
        rois = images[0].get("ROIs", []) if images else []
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{xml_path}: no Images[0].ROIs in the plist") from exc
    wanted = {name.strip().lower() for name in mass_names}
    polygons = []
    for index, roi in enumerate(rois):
        if str(roi.get("Name", "")).strip().lower() not in wanted:
            continue
        where = f"{xml_path} ROI {index}"
        points = tuple(parse_point(p, where) for p in roi.get("Point_px", []))
        if points:
            polygons.append(points)
    return tuple(polygons)


def _parse_name(path: Path) -> tuple[str, str, str, str]:
    """(fileid, patient, laterality, view) from an INbreast DICOM file name."""
    parts = path.stem.split("_")
    if len(parts) >= 5 and parts[2].upper() == "MG":
        return parts[0], parts[1], normalise_laterality(parts[3]), normalise_view(parts[4])
    return parts[0], "", "", ""


def _find_dir(src: Path, name: str) -> Path | None:
    for candidate in (src / name, src / "INbreast" / name):
        if candidate.is_dir():
            return candidate
    found = sorted(p for p in src.rglob(name) if p.is_dir())
    return found[0] if found else None


def iter_inbreast_records(
    src: str | os.PathLike, mass_names: Sequence[str] = ("Mass",)
) -> Iterator[Record]:
    """Records for every DICOM under `<src>/AllDICOMs` with masks from `<src>/AllXML`."""
    src = Path(os.path.abspath(src))
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder")
    dicom_dir = _find_dir(src, "AllDICOMs")
    if dicom_dir is None:
        raise FileNotFoundError(f"{src}: no AllDICOMs folder; is this the INbreast release?")
    xml_dir = _find_dir(src, "AllXML")
    xml_by_id: dict[str, Path] = {}
    if xml_dir is not None:
        xml_by_id = {p.stem: p for p in sorted(xml_dir.iterdir()) if p.suffix.lower() == ".xml"}
    names = tuple(mass_names)
    for path in sorted(p for p in dicom_dir.iterdir() if p.suffix.lower() in (".dcm", ".dicom")):
        file_id, patient, laterality, view = _parse_name(path)
        xml = xml_by_id.get(file_id)
        mask = NoMask()
        problem = ""
        if xml is not None:
            try:
                polygons = read_mass_polygons(xml, names)
            except ValueError as exc:
                problem = str(exc)
                polygons = ()
            if polygons:
                mask = PolygonMask(polygons, origin=xml)
        yield Record(
            id=safe_id(file_id),
            image=path,
            patient_id=patient,  # empty falls back to the DICOM PatientID in prepare
            mask=mask,
            view=view,
            laterality=laterality,
            source="inbreast",
            problem=problem,
        )
