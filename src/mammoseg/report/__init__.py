"""The report: the paper's Table 2 and Figure 2 — and every fold's learning curves — for a set of runs.

Input: run folders (config.yaml names the model and its pretrained weights; fold*/log.csv
holds the curves) and their evaluation folders (summary.json, per_image.csv). Output:
`table2.md` / `table2.csv` (with the published figures of Isosalo, Mustonen et al. 2022
beside them), `figure2_<run>.png` (best / median / worst cases by Dice),
`learning_curves_<run>.png`, `froc.png` (the lesion-level FROC of every run whose evaluation
has one, with their operating points in report.md), and `report.md`, the index linking them.

Each run's section states the post-processing chosen on its out-of-fold predictions
(postprocessing.json: threshold, minimum component area, most probable component only) and the
out-of-fold mean Dice before and after it. Next to Table 2, report.md says what produced each run
(image size, epochs per phase, initial weights, folds, mammoseg version, date:
`mammoseg.evaluation.runs.RunSettings`) and says in one sentence when a run's numbers are not comparable with the paper's 512 px ones (smaller or larger
images, fewer epochs than the `paper` preset, another number of folds, random initial weights).

Modules: `tables` (Table 2 beside the published figures, and what produced each run),
`figures` (Figure 2 panels, learning curves, the FROC figure) and `document` (report.md and
`write_report`).
"""

from mammoseg.report.document import OUTPUTS, froc_line, postprocessing_line, write_report
from mammoseg.report.figures import figure2, froc_section, learning_curves, pick_cases
from mammoseg.report.tables import (
    PAPER_TABLE2,
    comparability_sentence,
    paper_differences,
    settings_markdown,
    table2_markdown,
    table2_rows,
)

__all__ = [
    "OUTPUTS", "PAPER_TABLE2", "comparability_sentence", "figure2", "froc_line", "froc_section", "learning_curves",
    "paper_differences", "pick_cases", "postprocessing_line", "settings_markdown", "table2_markdown", "table2_rows",
    "write_report",
]
