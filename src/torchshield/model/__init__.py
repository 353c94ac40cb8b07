"""Model artifacts: the ``.tsb`` bundle, the static file scanner, watermarks, obfuscation.

Imports are lazy: the scanner (``torchshield.model.scan``) needs no torch, and importing this
package must not pull torch in for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchshield._lazy import lazy_exports

__all__ = ["BundleInfo", "VerifyReport", "inspect", "is_bundle", "load", "rotate_key", "save", "verify"]

if TYPE_CHECKING:  # pragma: no cover
    from torchshield.model.bundle import BundleInfo, VerifyReport, inspect, is_bundle, load, rotate_key, save, verify


__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "torchshield.model.bundle"), globals())
