"""Adversarial robustness: attacks, adversarial training losses, input defences, randomized
smoothing certification and robust-accuracy evaluation.

Threat model: an attacker who may change each model input within an Lp ball of radius eps
(inside the declared input range), with white-box (gradient) or black-box (score) access. Every
part of this package states the budget it measures or defends against; none of it helps against
larger perturbations, training-data poisoning or model theft."""

from torchshield.robust.attacks import (
    ATTACKS,
    Attack,
    available_attacks,
    build_attack,
    register_attack,
)
from torchshield.robust.training import make_loss

__all__ = [
    "ATTACKS",
    "Attack",
    "available_attacks",
    "build_attack",
    "make_loss",
    "register_attack",
]
