"""Sources → a prepared folder: windowed, padded, resized 16-bit images, masks and a manifest.

- `pipeline` — the driver: records from a source, parallel and shardable, resumable, merged;
- `image` — one record → its prepared image and mask (and the manifest row);
- `journal` — which records a (possibly sharded, possibly killed) run already prepared;
- `splits` — the patient-grouped train/holdout split.
"""

from mammoseg.prepare.pipeline import PrepareOptions, PrepareSummary, merge_prepared, prepare_dataset

__all__ = ["PrepareOptions", "PrepareSummary", "merge_prepared", "prepare_dataset"]
