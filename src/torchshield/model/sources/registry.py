"""Architectures by name (torchvision style): ``resnet18`` + a state dict is a model.

The registry is an explicit dict filled by :func:`register_architecture`, strict about
duplicate names; a name not registered here is looked up in ``torchvision.models`` when
torchvision is installed (``get_model(name, weights=None, **kwargs)``: never a download).
Builders are called with the JSON ``kwargs`` recorded in the bundle (``num_classes``, ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from torchshield.errors import InputError

__all__ = ["architectures", "build_architecture", "register_architecture", "unregister_architecture"]

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_architecture(name: str, builder: Builder, *, replace: bool = False) -> None:
    """Make ``name`` buildable: ``builder(**kwargs)`` returns the module (random init is fine)."""
    if not name or not isinstance(name, str):
        raise InputError("an architecture name must be a non-empty string")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not builder:
        raise InputError(f"architecture {name!r} is already registered", hint="pass replace=True to override it")
    _REGISTRY[name] = builder


def unregister_architecture(name: str) -> None:
    _REGISTRY.pop(name, None)


def architectures() -> list[str]:
    """Registered names (torchvision's are resolved on demand and not listed)."""
    return sorted(_REGISTRY)


def build_architecture(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    kwargs = dict(kwargs or {})
    builder = _REGISTRY.get(name)
    if builder is not None:
        return _checked(builder(**kwargs), name)
    try:
        import torchvision.models as tvm  # noqa: PLC0415 - optional, and heavy
    except Exception:  # noqa: BLE001 - missing, or a wheel that does not match this torch
        raise InputError(f"architecture {name!r} is not registered and torchvision is not usable here",
                         hint="register it with torchshield.model.sources.register_architecture(name, builder), "
                              "use --factory package.module:function, or pip install a torchvision matching "
                              "your torch") from None
    try:
        model = tvm.get_model(name, weights=None, **kwargs)
    except ValueError:
        raise InputError(f"architecture {name!r} is neither registered nor a torchvision model",
                         hint="see torchvision.models.list_models()") from None
    return _checked(model, name)


def _checked(model: Any, name: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputError(f"architecture {name!r} built a {type(model).__name__}, not a torch.nn.Module")
    return model
