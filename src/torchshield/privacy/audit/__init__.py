"""Empirical privacy audits: membership inference (loss, confidence, LiRA) with ROC data and a verdict."""

from __future__ import annotations

from torchshield.privacy.audit.membership import (
    AuditReport,
    ShadowTrainer,
    audit_membership,
    logit_confidence,
)
from torchshield.privacy.audit.roc import AttackResult, empirical_epsilon, roc, summarise

__all__ = [
    "AttackResult",
    "AuditReport",
    "ShadowTrainer",
    "audit_membership",
    "empirical_epsilon",
    "logit_confidence",
    "roc",
    "summarise",
]
