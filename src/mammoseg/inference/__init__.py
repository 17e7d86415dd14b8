"""Fold-ensemble inference in three units, driven by `mammoseg.inference.predict`:

- `ensemble` — pure: images in, the mean of the fold models' probabilities out;
- `inputs` — what to predict: prepared folders and DICOM files/folders, read into model input;
- `outputs` — the prediction folder: masks (on the input's grid), probabilities, overlays, DICOM SEG.
"""
