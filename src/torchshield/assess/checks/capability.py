"""Optional capabilities: a check that needs a part of torchshield this build lacks is skipped
with a plain reason, never faked."""

from __future__ import annotations

import importlib
from types import ModuleType

from torchshield.assess.subject import NotAssessable

__all__ = ["require"]


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise NotAssessable saying ``what`` is not available in this build."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise NotAssessable(
                f"{what} is not available in this build ({module} is missing)",
                "install a torchshield release that includes it",
            ) from None
        raise
