"""The attack registry: an explicit name -> class dict, strict about duplicate names.

Built-in attacks are added by :func:`register_builtin_attacks`, not by import side effects, so
what is registered is visible in one place; a user adds an attack with
``register_attack(MyAttack)`` (a subclass of :class:`Attack` with a unique ``name``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchshield.errors import InputError
from torchshield.robust.attacks.apgd import APGD, APGDL2, APGDTargeted, APGDTargetedL2
from torchshield.robust.attacks.base import Attack
from torchshield.robust.attacks.cw import CarliniWagnerL2
from torchshield.robust.attacks.ensemble import StandardEnsemble, StandardEnsembleL2
from torchshield.robust.attacks.fab import FABTargeted, FABTargetedL2
from torchshield.robust.attacks.gradient import FGSM, PGD, PGDL2
from torchshield.robust.attacks.square import SquareAttack, SquareAttackL2

__all__ = ["ATTACKS", "available_attacks", "build_attack", "get_attack", "register_attack",
           "register_builtin_attacks"]

ATTACKS: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack], *, registry: dict[str, type[Attack]] | None = None,
                    replace: bool = False) -> type[Attack]:
    """Add ``cls`` under ``cls.name``; a second attack with the same name is an error unless
    ``replace=True`` is given explicitly. Usable as a class decorator."""
    target = ATTACKS if registry is None else registry
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise TypeError(f"{cls!r} is not a subclass of torchshield.robust.attacks.Attack")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} must set a non-empty class attribute 'name'")
    if name in target and target[name] is not cls and not replace:
        raise ValueError(f"an attack named {name!r} is already registered ({target[name].__name__})")
    target[name] = cls
    return cls


def register_builtin_attacks(registry: dict[str, type[Attack]] | None = None) -> dict[str, type[Attack]]:
    """Register the attacks torchshield ships with; idempotent."""
    target = ATTACKS if registry is None else registry
    for cls in (FGSM, PGD, PGDL2, APGD, APGDL2, APGDTargeted, APGDTargetedL2, CarliniWagnerL2, FABTargeted,
                FABTargetedL2, SquareAttack, SquareAttackL2, StandardEnsemble, StandardEnsembleL2):
        register_attack(cls, registry=target)
    return target


def get_attack(name: str) -> type[Attack]:
    """The attack class registered as ``name`` (case-insensitive); InputError lists the choices."""
    if not ATTACKS:
        register_builtin_attacks()
    key = name.strip().lower()
    if key not in ATTACKS:
        raise InputError(f"unknown attack {name!r}", hint=f"choose one of: {', '.join(available_attacks())}")
    return ATTACKS[key]


def available_attacks() -> list[str]:
    if not ATTACKS:
        register_builtin_attacks()
    return sorted(ATTACKS)


def build_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Instantiate attack ``name`` on ``model``; unknown parameters are a clear InputError."""
    cls = get_attack(name)
    try:
        return cls(model, **params)
    except TypeError as exc:
        raise InputError(f"attack {name!r}: {exc}",
                         hint="see `torchshield robust attacks` for each attack's parameters") from exc
