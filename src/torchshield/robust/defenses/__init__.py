"""Input defences: squeezers, the feature-squeezing detector and defensive distillation."""

from torchshield.robust.defenses.detector import FeatureSqueezingDetector
from torchshield.robust.defenses.distillation import (
    defensive_distillation,
    distillation_loss,
    temperature_loss,
)
from torchshield.robust.defenses.squeeze import BitDepth, MedianSmoothing, Squeezer, parse_squeezer

__all__ = [
    "BitDepth",
    "FeatureSqueezingDetector",
    "MedianSmoothing",
    "Squeezer",
    "defensive_distillation",
    "distillation_loss",
    "parse_squeezer",
    "temperature_loss",
]
