"""HTTP front end of the serving core; the only place torchshield imports FastAPI."""

from torchshield.serve.http.app import ApiError, GuardMiddleware, audit_context, create_app, status_for
from torchshield.serve.http.context import AuditContext
from torchshield.serve.http.paths import AsyncDbPath, LoopPath, RequestPath, ThreadPath, choose_path

__all__ = ["ApiError", "AsyncDbPath", "AuditContext", "GuardMiddleware", "LoopPath", "RequestPath", "ThreadPath",
           "audit_context", "choose_path", "create_app", "status_for"]
