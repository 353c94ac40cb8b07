"""torchshield: protect PyTorch models and the data they learn from.

The top-level API keeps the nouns of the CLI: ``save``/``load``/``inspect`` for ``.tsb``
bundles and ``scan`` for any model file. Heavy parts import lazily, so ``import torchshield``
stays light (no torch, pandas, fastapi or flwr until they are used)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "inspect", "load", "save", "scan"]

_LAZY = {
    "save": ("torchshield.model.bundle", "save"),
    "load": ("torchshield.model.bundle", "load"),
    "inspect": ("torchshield.model.bundle", "inspect"),
    "scan": ("torchshield.model.scan", "scan"),
}

if TYPE_CHECKING:  # pragma: no cover
    from torchshield.model.bundle import inspect, load, save
    from torchshield.model.scan import scan


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'torchshield' has no attribute {name!r}")
