"""Adversarial attacks in plain PyTorch: FGSM, PGD (Linf/L2), APGD-CE, Carlini-Wagner L2 and the
score-based Square attack, behind one contract (:class:`Attack`) and an explicit registry."""

from torchshield.robust.attacks.apgd import APGD, APGDL2
from torchshield.robust.attacks.balls import L2Ball, LinfBall, NormBall
from torchshield.robust.attacks.base import Attack
from torchshield.robust.attacks.cw import CarliniWagnerL2
from torchshield.robust.attacks.gradient import FGSM, PGD, PGDL2
from torchshield.robust.attacks.registry import (
    ATTACKS,
    available_attacks,
    build_attack,
    get_attack,
    register_attack,
    register_builtin_attacks,
)
from torchshield.robust.attacks.square import SquareAttack

__all__ = [
    "APGD",
    "APGDL2",
    "ATTACKS",
    "FGSM",
    "PGD",
    "PGDL2",
    "Attack",
    "CarliniWagnerL2",
    "L2Ball",
    "LinfBall",
    "NormBall",
    "SquareAttack",
    "available_attacks",
    "build_attack",
    "get_attack",
    "register_attack",
    "register_builtin_attacks",
]
