"""Model artifacts: the ``.tsb`` bundle, model sources, the static file scanner, watermarks,
obfuscation.

Imports are lazy: the scanner (``torchshield.model.scan``) and the bundle header reader
(``inspect``, ``is_bundle``) need no torch, and importing this package must not pull torch in
for them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchshield._lazy import lazy_exports

__all__ = ["BundleInfo", "VerifyReport", "inspect", "is_bundle", "load", "load_model", "rotate_key", "save",
           "verify"]

_WHERE = {**dict.fromkeys(__all__, "torchshield.model.bundle"),
          **dict.fromkeys(("BundleInfo", "inspect", "is_bundle"), "torchshield.model.header"),
          "load_model": "torchshield.model.loading"}

if TYPE_CHECKING:  # pragma: no cover
    from torchshield.model.bundle import VerifyReport, load, rotate_key, save, verify
    from torchshield.model.header import BundleInfo, inspect, is_bundle
    from torchshield.model.loading import load_model


__getattr__ = lazy_exports(__name__, _WHERE, globals())
