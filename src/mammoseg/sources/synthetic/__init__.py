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
`plan` (which breast, masses and encoding each image gets), `layouts` (the three folder
layouts) and `dataset` (`write_synthetic_dataset`, the film markers).
"""

from __future__ import annotations

from mammoseg.sources.synthetic.dataset import SynthStyle, write_synthetic_dataset
from mammoseg.sources.synthetic.layouts import SynthSummary

__all__ = ["SynthStyle", "SynthSummary", "write_synthetic_dataset"]
