"""Model artifacts: the ``.tsb`` bundle, the static file scanner, watermarks, obfuscation.

Imports are lazy: the scanner (``torchshield.model.scan``) needs no torch, and importing this
package must not pull torch in for it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["BundleInfo", "VerifyReport", "inspect", "is_bundle", "load", "rotate_key", "save", "verify"]

if TYPE_CHECKING:  # pragma: no cover
    from torchshield.model.bundle import BundleInfo, VerifyReport, inspect, is_bundle, load, rotate_key, save, verify


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("torchshield.model.bundle"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'torchshield.model' has no attribute {name!r}")
