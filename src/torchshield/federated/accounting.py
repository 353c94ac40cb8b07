"""Client-level (ε, δ) accounting for DP-FedAvg.

With client-level DP the unit of privacy is a whole client (a hospital's data set): each
round samples a fraction ``q`` of clients, clips each sampled update to L2 norm ``C`` and adds
Gaussian noise of std ``z·C`` to their sum. That is the sampled Gaussian mechanism, applied
once per round, so the RDP accountant of DP-SGD applies unchanged with ``q`` = clients per
round / clients and ``steps`` = rounds (McMahan et al., 2018). We call Opacus' RDP maths
rather than re-deriving it. Caveat, stated in the docs: Flower samples a fixed number of
clients without replacement, while the bound assumes Poisson sampling; with ``q = 1`` (every
client every round) the two coincide and the bound is exact composition of Gaussians.
"""

from __future__ import annotations

import math

from torchshield.errors import InputError

__all__ = ["client_level_epsilon", "noise_for_target_epsilon"]


def client_level_epsilon(*, noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """ε spent after ``rounds`` rounds at ``noise_multiplier`` and client ``sample_rate``."""
    if noise_multiplier <= 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, rounds)]
    return float(acc.get_epsilon(delta=delta))


def noise_for_target_epsilon(*, target_epsilon: float, sample_rate: float, rounds: int, delta: float) -> float:
    """Smallest noise multiplier whose ε after ``rounds`` stays within ``target_epsilon``."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=rounds, accountant="rdp"))
    except ValueError as exc:
        raise InputError(f"privacy.target_epsilon {target_epsilon} cannot be reached in {rounds} rounds: {exc}",
                         hint="raise target_epsilon or reduce rounds") from None
