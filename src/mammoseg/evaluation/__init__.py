"""Scoring predictions against reference masks, and reading what a run produced.

- `metrics` — Dice, IoU and lesion-level counts of one mask pair; summaries with their spread;
- `scoring` — a prediction folder (or two mask folders) → per-image scores and a summary;
- `runs` — a run folder as the report and the results site read it (model, folds, evaluation).
"""
