"""Fold-ensemble inference: a trained run's fold models → masks on each input's own grid.

- `predict` — the driver: stream the inputs, ensemble them in batches, write the prediction
  folder, resume a killed run, predict one shard (`--parts`) and merge the shards;
- `dicomweb` — `predict --dicomweb`: search a server, fetch, predict, store the SEGs back;
- `ensemble` — pure: images in, the mean of the fold models' probabilities out;
- `inputs` — what to predict: prepared folders and DICOM files/folders, read into model input;
- `outputs` — one input's files: mask (on the input's grid), probability, overlay, DICOM SEG;
- `journal` — the prediction folder's settings, per-input journal and final CSVs;
- `run_identity` — which models a run holds, as the short digest every SEG records.
"""
