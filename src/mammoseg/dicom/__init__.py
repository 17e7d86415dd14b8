"""DICOM in and out: one bounded reader for every path that decodes DICOM bytes, and SEG writing.

- `reader` — `read_mammogram`: header checks, pixel decoding, windowing → a `Mammogram`;
- `checks` — what a header must say before any pixel is decoded (modality, size, bit depth);
- `pixels` — reading the file and decoding its pixel data within those limits;
- `levels` — the window or VOI LUT applied to the stored values;
- `codes` — the DICOM codes mammoseg writes and recognises (SOP classes, views, laterality);
- `seg` — DICOM Segmentation objects of predicted masks (the optional highdicom extra).
"""

from mammoseg.dicom.checks import HeaderError, ReadLimits
from mammoseg.dicom.pixels import DicomReadError
from mammoseg.dicom.reader import Mammogram, read_mammogram

__all__ = ["DicomReadError", "HeaderError", "Mammogram", "ReadLimits", "read_mammogram"]
