"""Privacy gateway for text models served as a service: PII in requests is de-identified before the
model sees it, stand-ins are re-identified only for callers allowed to see PII, and answers are
scanned for PII the caller did not send (a model repeating its training data).

Threat model and design: docs/gateway.md. The HTTP layer (``serve``) maps the errors here to
status codes (``http_status`` on each class) and callers' roles to ``reidentify``."""

from torchshield.gateway.errors import GatewayInputError, InputRefused, InputTooLarge, OutputBlocked
from torchshield.gateway.gateway import (
    CounterHook,
    Gateway,
    GatewayAudit,
    GatewayBatchResult,
    GatewayRequest,
    GatewayResult,
)
from torchshield.gateway.policy import GatewayPolicy, load_gateway_policy

__all__ = [
    "CounterHook",
    "Gateway",
    "GatewayAudit",
    "GatewayBatchResult",
    "GatewayInputError",
    "GatewayPolicy",
    "GatewayRequest",
    "GatewayResult",
    "InputRefused",
    "InputTooLarge",
    "OutputBlocked",
    "load_gateway_policy",
]
