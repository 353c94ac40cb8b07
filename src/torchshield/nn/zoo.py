"""A small model zoo: an MLP for tables, a CNN for small images, and a ``module:factory`` hook.

Specs are plain dicts from the YAML config, e.g. ``{"type": "mlp", "hidden": [256, 256]}``,
``{"type": "cnn", "channels": [16, 32], "kernel": 3}``, or ``{"type": "mypkg.models:make",
"width": 64}`` (any importable factory called with ``in_features``/``in_shape`` and
``num_classes`` plus the remaining keys). Models use no BatchNorm, so DP-SGD can train them
unchanged; a custom model that does is fixed by ``train.dp`` (BatchNorm -> GroupNorm)."""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Sequence
from typing import Any

from torch import nn

from torchshield.errors import InputError

__all__ = ["build_model", "call_factory", "cnn", "mlp", "parse_target"]

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


def build_model(spec: dict[str, Any], *, in_features: int | None = None, in_shape: Sequence[int] | None = None,
                num_classes: int) -> nn.Module:
    """Build the model a config's ``model:`` section describes."""
    spec = dict(spec)
    kind = str(spec.pop("type", "mlp"))
    if in_shape is not None and in_features is None:
        in_features = math.prod(int(v) for v in in_shape)
    if kind == "mlp":
        if in_features is None:
            raise InputError("model mlp needs in_features or in_shape")
        return mlp(in_features, num_classes, **_known(mlp, spec, kind))
    if kind == "cnn":
        if in_shape is None:
            raise InputError("model cnn needs in_shape")
        return cnn(in_shape, num_classes, **_known(cnn, spec, kind))
    if ":" in kind:
        return call_factory(kind, spec, in_features=in_features, in_shape=in_shape, num_classes=num_classes)
    raise InputError(f"model.type: unknown model type {kind!r}",
                     hint="use mlp, cnn, or 'package.module:factory'")


def _known(fn: Any, spec: dict[str, Any], kind: str) -> dict[str, Any]:
    allowed = {p for p in inspect.signature(fn).parameters if p not in {"in_features", "in_shape", "num_classes"}}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise InputError(f"model: unknown option {unknown[0]!r} for type {kind}", hint=f"allowed: {sorted(allowed)}")
    return spec


_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def parse_target(target: str) -> tuple[str, str]:
    if not _TARGET.match(target or ""):
        raise InputError(f"factory {target!r} is not 'package.module:function'",
                         hint="e.g. --factory mypkg.models:resnet_small")
    module, _, attr = target.partition(":")
    return module, attr


def call_factory(target: str, kwargs: dict[str, Any], **shape: Any) -> nn.Module:
    """Import ``target`` and call it with ``kwargs`` plus the shape arguments it accepts (the one
    factory caller: training configs here, bundles through ``model.sources.factory``)."""
    module_name, attr = parse_target(target)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"model.type: cannot import factory {target!r} ({exc})",
                         hint="give an importable 'package.module:function' on PYTHONPATH") from None
    params = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in shape.items() if v is not None and (takes_kwargs or k in params) and k not in kwargs}
    model = factory(**extra, **kwargs)
    if not isinstance(model, nn.Module):
        raise InputError(f"model.type: {target} returned {type(model).__name__}, not a torch.nn.Module")
    return model
