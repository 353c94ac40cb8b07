"""Training: the one shared loop (``fit``/``evaluate``), a small model zoo, data loading,
YAML run configs and DP-SGD. Opacus is imported only when a run is private."""

from __future__ import annotations

from torchshield.train.datasets import ImageData, Split, TabularData, load_dataset
from torchshield.train.loop import EpochEnd, TrainResult, cross_entropy_loss, evaluate, fit
from torchshield.train.zoo import build_model

__all__ = [
    "EpochEnd",
    "ImageData",
    "Split",
    "TabularData",
    "TrainResult",
    "build_model",
    "cross_entropy_loss",
    "evaluate",
    "fit",
    "load_dataset",
]
