"""Client-level (ε, δ) accounting for DP-FedAvg, with the sampling model Flower really uses.

With client-level DP the unit of privacy is a whole client (a hospital's data set). Each round
the server picks ``k`` of the ``n`` clients, each picked client clips its update to L2 norm ``C``,
and the server adds Gaussian noise of std ``z·C`` to their sum (``z·C/m`` on the mean of the
``m`` survivors). Flower's FedAvg picks the ``k`` clients as a *fixed-size sample without
replacement* (``ClientManager.sample``), not as a Poisson sample, so the Poisson-subsampled RDP
bound of DP-SGD does not apply (the issue's example: 100 clients, 10 a round, z = 1, 100 rounds:
the Poisson formula says 7.90, a valid without-replacement bound is 83.9).

We use Flower's own accountant (``flwr.supercore.privacy_accounting.RdpAccountant``, which
wraps Google's ``dp-accounting``) with the models that match what the code does:

- ``replace-one`` (default, any ``fraction_fit``): the neighbouring federation has one client's
  data replaced by anything. Sampling without replacement of ``k`` of ``n`` (Wang, Balle and
  Kasiviswanathan 2019). Replacing one clipped update moves the sum by up to ``2C``, so the
  event's noise multiplier is ``z/2``.
- ``add-remove`` (only with every client in every round): one client's update is there or not
  (the "zero-out" form: the number of clients is public). Sensitivity ``C``, no amplification,
  noise multiplier ``z``. Flower has no accountant for fixed-size sampling under add/remove, so
  with ``fraction_fit < 1`` that relation is refused rather than given a number that is not a bound.

The sample must also be secret for amplification to hold: ``SecureClientManager`` draws it from
the OS CSPRNG, and the metrics file does not say which clients took part.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torchshield.errors import InputError, MissingDependencyError

__all__ = ["NEIGHBOURING", "accounting_record", "check_accountable", "client_level_epsilon",
           "noise_for_target_epsilon"]

NEIGHBOURING = ("replace-one", "add-remove")


def check_accountable(*, clients: int, per_round: int, neighbouring: str) -> None:
    """Refuse a (relation, sampling) pair no accountant models."""
    if neighbouring not in NEIGHBOURING:
        raise InputError(f"privacy.neighbouring must be one of {list(NEIGHBOURING)}, got {neighbouring!r}")
    if neighbouring == "add-remove" and per_round < clients:
        raise InputError(
            f"privacy.neighbouring: add-remove has no accountant for Flower's fixed-size client sampling "
            f"({per_round} of {clients} clients a round, without replacement)",
            hint="use neighbouring: replace-one (the default), or fraction_fit: 1 (every client every round)")


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """dp-accounting logs one warning per RDP order it drops (still a valid bound: a min over the rest)."""
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _accountant(clients: int, per_round: int, neighbouring: str, delta: float) -> tuple[Any, Any, float]:
    try:
        import dp_accounting  # noqa: F401 - Flower's accountant needs it (flwr[dp])
        from flwr.supercore.privacy_accounting import (
            GaussianPrivacyEvent,
            NeighboringRelation,
            PrivacyConfig,
            SamplingMethod,
        )
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant
    except ImportError:
        raise MissingDependencyError("dp-accounting", "fl") from None
    if neighbouring == "replace-one":
        cfg = PrivacyConfig(target_delta=delta, population_size=clients,
                            neighboring_relation=NeighboringRelation.REPLACE_ONE,
                            sampling_method=SamplingMethod.WITHOUT_REPLACEMENT)
        scale = 0.5  # sensitivity 2C under replace-one
    else:
        cfg = PrivacyConfig(target_delta=delta, population_size=clients,
                            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                            sampling_method=SamplingMethod.NO_AMPLIFICATION)
        scale = 1.0
    return RdpAccountant(cfg), GaussianPrivacyEvent, scale


def client_level_epsilon(*, noise_multiplier: float, clients: int, per_round: int, rounds: int, delta: float,
                         neighbouring: str = "replace-one") -> float:
    """ε spent after ``rounds`` rounds of ``per_round``-of-``clients`` sampling at ``noise_multiplier``."""
    check_accountable(clients=clients, per_round=per_round, neighbouring=neighbouring)
    if noise_multiplier <= 0:
        return math.inf
    if rounds <= 0:
        return 0.0
    acc, event, scale = _accountant(clients, per_round, neighbouring, delta)
    with _quiet_absl():
        acc.compose(event(noise_multiplier=noise_multiplier * scale, sample_size=per_round,
                          population_size=clients), rounds)
        return float(acc.get_epsilon(delta))


def noise_for_target_epsilon(*, target_epsilon: float, clients: int, per_round: int, rounds: int, delta: float,
                             neighbouring: str = "replace-one", tolerance: float = 0.005) -> float:
    """Smallest noise multiplier (to ``tolerance``, relative) whose ε after ``rounds`` is <= the target."""
    def eps(z: float) -> float:
        return client_level_epsilon(noise_multiplier=z, clients=clients, per_round=per_round, rounds=rounds,
                                    delta=delta, neighbouring=neighbouring)

    lo, hi = 0.05, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 4
        if hi > 1e4:
            raise InputError(f"privacy.target_epsilon {target_epsilon} cannot be reached in {rounds} rounds",
                             hint="raise target_epsilon or reduce rounds")
    while hi / lo > 1 + tolerance:  # eps is decreasing in z: keep eps(hi) <= target
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= target_epsilon else (mid, hi)
    return hi


def accounting_record(*, noise_multiplier: float, clients: int, per_round: int, rounds: int, delta: float,
                      neighbouring: str, clip: float) -> dict[str, Any]:
    """The bundle's ``privacy`` slot for a federation: the number and what it is a bound for."""
    return {
        "mechanism": "client-level DP-FedAvg (Gaussian, fixed clipping)", "unit": "client",
        "neighbouring": f"{neighbouring} client" if neighbouring == "replace-one" else
        "add/remove one client (zero-out: the number of clients is public)",
        "sampling": f"fixed-size without replacement, {per_round} of {clients} clients a round (CSPRNG)",
        "accountant": "rdp (flwr.supercore.privacy_accounting, dp-accounting)",
        "noise_multiplier": noise_multiplier, "clipping_norm": clip, "clients": clients,
        "clients_per_round": per_round, "sample_rate": per_round / clients, "rounds": rounds, "delta": delta,
        "epsilon": client_level_epsilon(noise_multiplier=noise_multiplier, clients=clients, per_round=per_round,
                                        rounds=rounds, delta=delta, neighbouring=neighbouring),
    }
