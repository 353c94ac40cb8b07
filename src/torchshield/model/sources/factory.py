"""``package.module:factory`` models: any importable function returning an ``nn.Module``.

Importing a name runs that module's code, so a bundle naming a factory is only rebuilt when its
origin is proven (a verified signature) or the caller allowed the factory by name; see
:func:`torchshield.model.loading.load_model`."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from torchshield.errors import InputError

__all__ = ["call_factory", "factory_allowed", "parse_target"]

_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def parse_target(target: str) -> tuple[str, str]:
    if not _TARGET.match(target or ""):
        raise InputError(f"factory {target!r} is not 'package.module:function'",
                         hint="e.g. --factory mypkg.models:resnet_small")
    module, _, attr = target.partition(":")
    return module, attr


def factory_allowed(target: str, allowed: Iterable[str]) -> bool:
    """``allowed`` holds exact targets or patterns (``mypkg.*``)."""
    return any(target == a or fnmatch.fnmatchcase(target, a) for a in allowed)


def call_factory(target: str, kwargs: dict[str, Any], **shape: Any) -> nn.Module:
    """Import ``target`` and call it with ``kwargs`` plus the shape arguments it accepts."""
    module_name, attr = parse_target(target)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import factory {target!r} ({exc})",
                         hint="give an importable 'package.module:function' on PYTHONPATH") from None
    params = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in shape.items() if v is not None and (takes_kwargs or k in params) and k not in kwargs}
    model = factory(**extra, **kwargs)
    if not isinstance(model, nn.Module):
        raise InputError(f"factory {target} returned {type(model).__name__}, not a torch.nn.Module")
    return model
