"""Differential privacy: accounting for DP-SGD, DP aggregate queries over a persistent budget
ledger, and empirical leakage audits (membership inference). Heavy parts load lazily."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Dataset",
    "Ledger",
    "audit_membership",
    "epsilon_for",
    "noise_multiplier_for",
]

_LAZY = {
    "Dataset": "torchshield.privacy.queries",
    "Ledger": "torchshield.privacy.ledger",
    "audit_membership": "torchshield.privacy.audit",
    "epsilon_for": "torchshield.privacy.accounting",
    "noise_multiplier_for": "torchshield.privacy.accounting",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'torchshield.privacy' has no attribute {name!r}")
