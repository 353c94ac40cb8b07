"""Adversarial attacks in plain PyTorch: FGSM, PGD (Linf/L2), APGD (CE, DLR, CW losses) and APGD-T,
FAB-T (Linf/L2), Carlini-Wagner L2, the score-based Square attack (Linf/L2), and the standard
ensemble of them (the robust accuracy torchshield reports), behind one contract (:class:`Attack`)
and an explicit registry."""

from torchshield.robust.attacks.apgd import APGD, APGDL2, APGDTargeted, APGDTargetedL2
from torchshield.robust.attacks.balls import L2Ball, LinfBall, NormBall
from torchshield.robust.attacks.base import Attack
from torchshield.robust.attacks.cw import CarliniWagnerL2
from torchshield.robust.attacks.ensemble import StandardEnsemble, StandardEnsembleL2
from torchshield.robust.attacks.fab import FABTargeted, FABTargetedL2
from torchshield.robust.attacks.gradient import FGSM, PGD, PGDL2
from torchshield.robust.attacks.registry import (
    ATTACKS,
    available_attacks,
    build_attack,
    get_attack,
    register_attack,
    register_builtin_attacks,
)
from torchshield.robust.attacks.square import SquareAttack, SquareAttackL2

__all__ = [
    "APGD",
    "APGDL2",
    "APGDTargeted",
    "APGDTargetedL2",
    "ATTACKS",
    "FABTargeted",
    "FABTargetedL2",
    "FGSM",
    "PGD",
    "PGDL2",
    "Attack",
    "CarliniWagnerL2",
    "L2Ball",
    "LinfBall",
    "NormBall",
    "SquareAttack",
    "SquareAttackL2",
    "StandardEnsemble",
    "StandardEnsembleL2",
    "available_attacks",
    "build_attack",
    "get_attack",
    "register_attack",
    "register_builtin_attacks",
]
