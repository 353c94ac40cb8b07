"""Differential privacy: accounting for DP-SGD, DP aggregate queries over a persistent budget
ledger, and empirical leakage audits (membership inference). Heavy parts load lazily."""

from __future__ import annotations

from torchshield._lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _LAZY, globals())
