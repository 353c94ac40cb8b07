"""Our own small model zoo: an MLP for tables and a CNN for small images.

Specs are plain dicts, e.g. ``{"type": "mlp", "hidden": [256, 256]}`` or ``{"type": "cnn",
"channels": [16, 32], "kernel": 3}``; ``{"type": "package.module:factory", ...}`` calls a
factory (see :mod:`torchshield.model.sources.factory`). The models use no BatchNorm, so DP-SGD
trains them unchanged.

It lives here, under model sources, so that rebuilding a bundle's model never needs the
training package (dependencies point down: train -> model); ``torchshield.nn.zoo`` is the
same zoo for training configs."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from torchshield.errors import InputError

__all__ = ["build_zoo_model", "cnn", "mlp"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU}


def _activation(name: str) -> type[nn.Module]:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise InputError(f"model.activation: unknown activation {name!r}",
                         hint=f"use one of {sorted(_ACTIVATIONS)}") from None


def mlp(in_features: int, num_classes: int, *, hidden: Sequence[int] = (256, 256),
        activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """Flatten -> (Linear -> activation [-> Dropout]) per hidden width -> Linear."""
    act = _activation(activation)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), act()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(in_shape: Sequence[int], num_classes: int, *, channels: Sequence[int] = (16, 32), kernel: int = 3,
        activation: str = "relu", pool: bool = False) -> nn.Sequential:
    """Conv(k, stride 1, no padding) -> activation [-> MaxPool2] per channel width -> Linear."""
    if len(in_shape) != 3:
        raise InputError(f"model cnn needs image input (C, H, W), got shape {tuple(in_shape)}",
                         hint="use an image data set or model type mlp")
    act = _activation(activation)
    c, h, w = (int(v) for v in in_shape)
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, int(out), kernel), act()]
        c, h, w = int(out), h - kernel + 1, w - kernel + 1
        if pool:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise InputError(f"model cnn: input {tuple(in_shape)} is too small for {len(channels)} conv layers "
                             f"of kernel {kernel}", hint="use fewer channels entries or a smaller kernel")
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
    return nn.Sequential(*layers)


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


def _known(fn: Any, spec: dict[str, Any], kind: str) -> dict[str, Any]:
    allowed = {p for p in inspect.signature(fn).parameters if p not in {"in_features", "in_shape", "num_classes"}}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise InputError(f"model: unknown option {unknown[0]!r} for type {kind}", hint=f"allowed: {sorted(allowed)}")
    return spec
