"""Secure model serving: API keys, Casbin RBAC per model, rate limits, extraction monitoring and
a hash-chained audit log, all web-free; ``serve.http`` adds the FastAPI front end.

Import this package only where serving is wanted: it pulls in SQLAlchemy and Casbin."""

from torchshield.serve.access import ApiKey, KeyStore, NewKey
from torchshield.serve.audit import AuditLog, AuditWriter, VerifyReport
from torchshield.serve.db import Database, open_database
from torchshield.serve.models import (
    InputSpec,
    ModelRegistry,
    OutputPolicy,
    ServedModel,
    TrustPolicy,
    load_bundle_model,
)
from torchshield.serve.monitor import Alert, ExtractionMonitor, MonitorConfig
from torchshield.serve.rbac import ROLES, Authorizer
from torchshield.serve.service import Decision, ServeConfig, Service

__all__ = [
    "Alert",
    "ApiKey",
    "AuditLog",
    "AuditWriter",
    "Authorizer",
    "Database",
    "Decision",
    "ExtractionMonitor",
    "InputSpec",
    "KeyStore",
    "ModelRegistry",
    "MonitorConfig",
    "NewKey",
    "OutputPolicy",
    "ROLES",
    "ServeConfig",
    "ServedModel",
    "Service",
    "TrustPolicy",
    "VerifyReport",
    "load_bundle_model",
    "open_database",
]
