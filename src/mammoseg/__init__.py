"""mammoseg: breast mass segmentation in mammograms.

Implements Isosalo, Mustonen et al., "Evaluation of different CNN encoder-decoder
architectures for breast mass segmentation" (SPIE Medical Imaging 2022) as a tool:
prepare -> train (patient-grouped 5-fold CV) -> predict (fold ensemble) -> evaluate -> report.

The Python API is `Segmenter` (`from mammoseg import Segmenter`): a trained run applied to one
mammogram. It is imported on first use, so `import mammoseg` (and the command line) stay fast.
"""

from typing import Any

from mammoseg.version import __version__

__all__ = ["Segmentation", "Segmenter", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Segmenter", "Segmentation"):
        from mammoseg.inference import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'mammoseg' has no attribute {name!r}")
