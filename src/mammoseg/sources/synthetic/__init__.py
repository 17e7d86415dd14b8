"""Synthetic mammogram phantoms: mammoseg's built-in data, written in the public layouts.

Why: the pipeline must run end to end (and be tested) without a clinical archive. The
phantoms are realistic where the method cares: a breast against the chest-wall edge with a
skin line and a dark air background, fibroglandular texture with the power-law spectrum
measured on mammographic backgrounds (1/f^beta, beta ~ 3), a pectoral muscle in MLO views,
and low-contrast masses (round, lobulated, spiculated) with soft or ill-defined margins.
The mask of a mass is its profile thresholded at half-maximum, so mask and visible mass
agree. They are written as real, conformant DICOM (MG, 12-14 bit, MONOCHROME1 and
MONOCHROME2; For Presentation with a window or a VOI LUT Sequence, For Processing without a
VOI; the device and exposure attributes vendors write) in the layout of the `manifest`,
`inbreast` or `cbis-ddsm` readers, so reading them back exercises the same code as real data.

Modules: `texture` (1/f^beta noise fields), `phantom` (the image model: breast, tissue,
pectoral muscle, masses; geometry conventions and the mass size rule), `dicom_writer`
(stored values, tags, photometric, VOI, UIDs), `acquisition` (device style and exposure),
`plan` (which breast, masses and encoding each image gets) and `layouts` (the three folder
layouts and `write_synthetic_dataset`).
"""

from __future__ import annotations

from mammoseg.sources import FORMATS
from mammoseg.sources.synthetic.dicom_writer import (
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    SECONDARY_CAPTURE,
    DicomInfo,
    Encoding,
    tissue_window,
    to_stored_values,
    write_dicom,
)
from mammoseg.sources.synthetic.layouts import (
    CBIS_CSV_COLUMNS,
    CBIS_CSV_NAMES,
    MANIFEST_CSV_COLUMNS,
    SynthSummary,
    write_synthetic_dataset,
)
from mammoseg.sources.synthetic.phantom import (
    LATERALITIES,
    MASS_KINDS,
    VIEWS,
    BreastSpec,
    MassSpec,
    Phantom,
    chest_side_for,
    make_phantom,
    mass_diameter_px,
    random_breast,
    random_mass,
    render_phantom,
)
from mammoseg.sources.synthetic.plan import ImagePlan, plan_dataset
from mammoseg.sources.synthetic.texture import power_law_fields, power_law_noise

__all__ = [
    "CBIS_CSV_COLUMNS",
    "CBIS_CSV_NAMES",
    "FORMATS",
    "LATERALITIES",
    "MANIFEST_CSV_COLUMNS",
    "MASS_KINDS",
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "SECONDARY_CAPTURE",
    "VIEWS",
    "BreastSpec",
    "DicomInfo",
    "Encoding",
    "ImagePlan",
    "MassSpec",
    "Phantom",
    "SynthSummary",
    "chest_side_for",
    "make_phantom",
    "mass_diameter_px",
    "plan_dataset",
    "power_law_fields",
    "power_law_noise",
    "random_breast",
    "random_mass",
    "render_phantom",
    "tissue_window",
    "to_stored_values",
    "write_dicom",
    "write_synthetic_dataset",
]
