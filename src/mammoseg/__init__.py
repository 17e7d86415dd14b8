"""mammoseg: breast mass segmentation in mammograms.

Implements Isosalo, Mustonen et al., "Evaluation of different CNN encoder-decoder
architectures for breast mass segmentation" (SPIE Medical Imaging 2022) as a tool:
prepare -> train (patient-grouped 5-fold CV) -> predict (fold ensemble) -> evaluate -> report.
"""

__version__ = "0.1.0"
