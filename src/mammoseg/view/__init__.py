"""The static results browser: `write_view(PRED_OR_EVAL_OR_RUN, out_dir)` → OUT/index.html.

A self-contained site (HTML, CSS, a little plain JavaScript; no server, no network) that
lists every image with an overlay thumbnail and its scores, sorts and filters them (also
from the URL), and opens one case with its layers toggled by keys. docs/view.md says what
it shows; `collect` finds the cases, `render` draws them, `site` writes the folder.
"""

from mammoseg.view.site import write_view

__all__ = ["write_view"]
