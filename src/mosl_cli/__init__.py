"""mosl: multi-organ self-supervised pre-training for breast-lesion segmentation."""

__version__ = "0.1.0"
