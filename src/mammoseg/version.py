"""The version of mammoseg: recorded in every output folder, SEG, report and model card."""

__version__ = "0.1.0"
