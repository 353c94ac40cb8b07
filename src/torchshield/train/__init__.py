"""Training runs: YAML run configs, DP-SGD and the bundle a run writes. The shared loop, the zoo and
data loading live in ``torchshield.nn`` (below every user of them) and are re-exported here for the
training API. Opacus is imported only when a run is private."""

from __future__ import annotations

from torchshield.nn.datasets import ImageData, Split, TabularData, load_dataset
from torchshield.nn.loop import EpochEnd, TrainResult, cross_entropy_loss, evaluate, fit
from torchshield.nn.zoo import build_model

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
