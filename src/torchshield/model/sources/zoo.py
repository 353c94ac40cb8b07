"""Rebuilding a zoo model from a bundle's recorded spec.

The architectures themselves (``mlp``, ``cnn``) live once, in :mod:`torchshield.nn.zoo`, below
both training and model sources. What this module adds is the rule for a bundle: a
``{"type": "package.module:factory"}`` spec names code to import, so it is called (through
:mod:`torchshield.model.sources.factory`) only when the bundle's origin is proven or the caller
allowed that factory by name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from torchshield.errors import InputError
from torchshield.nn.zoo import _known, cnn, mlp

__all__ = ["build_zoo_model", "cnn", "mlp"]


def build_zoo_model(spec: dict[str, Any], *, in_shape: Sequence[int], num_classes: int,
                    allow_factory: bool = True) -> nn.Module:
    """Build the model a zoo spec describes for inputs of ``in_shape`` and ``num_classes`` outputs."""
    spec = dict(spec)
    kind = str(spec.pop("type", "mlp"))
    in_features = math.prod(int(v) for v in in_shape)
    if kind == "mlp":
        return mlp(in_features, num_classes, **_known(mlp, spec, kind))
    if kind == "cnn":
        return cnn(in_shape, num_classes, **_known(cnn, spec, kind))
    if ":" in kind:
        from torchshield.model.sources.factory import call_factory

        if not allow_factory:
            raise InputError(f"model.type {kind!r} names code to import, and this bundle's origin is not proven",
                             hint="verify its signature (verify_with= / --pubkey) or allow the factory by name")
        return call_factory(kind, spec, in_features=in_features, in_shape=list(in_shape), num_classes=num_classes)
    raise InputError(f"model.type: unknown model type {kind!r}", hint="use mlp, cnn, or 'package.module:factory'")
