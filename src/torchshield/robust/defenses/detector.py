"""Feature-squeezing detector (Xu, Evans & Qi 2018), calibrated to a chosen false-positive rate.

Score of an input: the largest L1 distance between the model's softmax on the input and on each
squeezed version. Natural inputs barely move under squeezing; adversarial ones, sitting just
across a decision boundary, often do. The threshold is the ``ceil((n + 1)(1 - fpr))``-th
smallest score of ``n`` clean calibration inputs, so a new clean input from the same
distribution is flagged with probability at most ``fpr`` (split-conformal guarantee).

Threat model: catches perturbations crafted without knowledge of the detector. An adaptive
attacker who optimises against the detector too can evade it (Carlini & Wagner 2017); pair it
with adversarial training, not instead of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchshield.errors import FormatError, InputError
from torchshield.robust.defenses.squeeze import Squeezer, parse_squeezer
from torchshield.robust.validation import check_bounds, check_inputs

__all__ = ["FeatureSqueezingDetector"]


@dataclass
class FeatureSqueezingDetector:
    model: nn.Module
    squeezers: Sequence[Squeezer]
    bounds: tuple[float, float] = (0.0, 1.0)
    threshold: float | None = None
    target_fpr: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bounds = check_bounds(self.bounds)
        if not self.squeezers:
            raise InputError("the detector needs at least one squeezer (e.g. bits:4, median:2)")

    @torch.no_grad()
    def scores(self, x: Tensor, *, batch_size: int = 512) -> Tensor:
        """Per-input detection score (max L1 distance between softmax outputs), in [0, 2]."""
        check_inputs(x, self.bounds)
        was_training = self.model.training
        self.model.eval()
        try:
            out = []
            for xb in x.split(batch_size):
                p = F.softmax(self.model(xb), dim=1)
                dist = torch.stack([(F.softmax(self.model(s(xb, self.bounds)), dim=1) - p).abs().sum(dim=1)
                                    for s in self.squeezers])
                out.append(dist.amax(dim=0))
            return torch.cat(out)
        finally:
            self.model.train(was_training)

    def calibrate(self, x_clean: Tensor, *, fpr: float) -> float:
        """Set the threshold so clean inputs are flagged at rate <= ``fpr``; returns it."""
        if not 0 < fpr < 1:
            raise InputError(f"the false-positive rate must be in (0, 1), got {fpr}")
        scores = self.scores(x_clean).double().sort().values
        n = scores.numel()
        rank = math.ceil((n + 1) * (1 - fpr))
        if rank > n:
            raise InputError(f"{n} clean examples are too few to calibrate a false-positive rate of {fpr}",
                             hint=f"use at least {math.ceil(1 / fpr)} examples or a larger rate")
        self.threshold = float(scores[rank - 1])
        self.target_fpr = fpr
        self.calibration = {"examples": n, "observed_fpr": float((scores > self.threshold).double().mean())}
        return self.threshold

    def detect(self, x: Tensor) -> Tensor:
        """Boolean mask: True where the input looks adversarial."""
        if self.threshold is None:
            raise InputError("the detector is not calibrated", hint="call calibrate() or load a calibrated file")
        return self.scores(x) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "feature-squeezing", "version": 1, "squeezers": [s.spec() for s in self.squeezers],
                "bounds": list(self.bounds), "threshold": self.threshold, "target_fpr": self.target_fpr,
                "calibration": self.calibration}

    @classmethod
    def from_dict(cls, model: nn.Module, doc: dict[str, Any]) -> FeatureSqueezingDetector:
        if not isinstance(doc, dict) or doc.get("kind") != "feature-squeezing" or doc.get("version") != 1:
            raise FormatError("not a torchshield feature-squeezing detector file (kind/version)")
        try:
            threshold = float(doc["threshold"])
            detector = cls(model, [parse_squeezer(s) for s in doc["squeezers"]], tuple(doc["bounds"]), threshold,
                           doc.get("target_fpr"), dict(doc.get("calibration") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"detector file is missing or has a bad field ({exc})") from None
        if not (math.isfinite(threshold) and threshold >= 0):  # NaN flags nothing, a negative one everything
            raise FormatError(f"detector threshold must be a finite number >= 0, got {threshold}",
                              hint="calibrate it again with `torchshield robust calibrate-detector`")
        return detector
