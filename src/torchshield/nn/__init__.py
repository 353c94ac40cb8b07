"""The neural-network basics every capability builds on: the one training loop (``fit``/``evaluate``),
the architectures of our small zoo, and tables/images turned into tensors. It sits below ``model``,
``robust``, ``privacy`` and ``train`` so that watermark embedding, distillation, DP queries and
training runs share one loop without importing each other."""

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
