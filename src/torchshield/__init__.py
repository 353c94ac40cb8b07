"""torchshield: protect PyTorch models and the data they learn from.

The top-level API keeps the nouns of the CLI: ``save``/``load``/``inspect`` for ``.tsb``
bundles, ``load_model`` for the ready module a bundle describes, and ``scan`` for any model
file. Heavy parts import lazily, so ``import torchshield`` stays light (no torch, pandas,
fastapi or flwr until they are used)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchshield._lazy import lazy_exports
from torchshield._version import __version__

__all__ = ["__version__", "inspect", "load", "load_model", "save", "scan"]

_LAZY = {
    "save": "torchshield.model.bundle",
    "load": "torchshield.model.bundle",
    "inspect": "torchshield.model.header",
    "load_model": "torchshield.model.loading",
    "scan": "torchshield.model.scan",
}

if TYPE_CHECKING:  # pragma: no cover
    from torchshield.model.bundle import load, save
    from torchshield.model.header import inspect
    from torchshield.model.loading import load_model
    from torchshield.model.scan import scan


__getattr__ = lazy_exports(__name__, _LAZY, globals())
