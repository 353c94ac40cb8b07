"""Model artifacts: the ``.tsb`` bundle, the static file scanner, watermarks, obfuscation."""

from torchshield.model.bundle import BundleInfo, VerifyReport, inspect, is_bundle, load, rotate_key, save, verify

__all__ = ["BundleInfo", "VerifyReport", "inspect", "is_bundle", "load", "rotate_key", "save", "verify"]
