"""``package.module:factory`` models: any importable function returning an ``nn.Module``.

Importing a name runs that module's code, so a bundle naming a factory is only rebuilt when its
origin is proven (a verified signature) or the caller allowed the factory by name; see
:func:`torchshield.model.loading.load_model`."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torchshield.nn.zoo import call_factory, parse_target

__all__ = ["call_factory", "factory_allowed", "parse_target"]



def factory_allowed(target: str, allowed: Iterable[str]) -> bool:
    """``allowed`` holds exact targets or patterns (``mypkg.*``)."""
    return any(target == a or fnmatch.fnmatchcase(target, a) for a in allowed)
