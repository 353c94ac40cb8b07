"""HTTP front end of the serving core; the only place torchshield imports FastAPI."""

from torchshield.serve.http.app import ApiError, GuardMiddleware, create_app

__all__ = ["ApiError", "GuardMiddleware", "create_app"]
