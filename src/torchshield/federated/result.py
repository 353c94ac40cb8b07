"""What a federated run returns: its own module, so the run (``server_app``) and the writer of its
outputs (``outputs``) both depend on it instead of on each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchshield.federated.config import FederationConfig

__all__ = ["FederationResult"]


@dataclass
class FederationResult:
    config: FederationConfig
    rounds: list[dict[str, Any]]
    privacy: dict[str, Any] | None
    final_accuracy: float
    outputs: dict[str, str] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)
