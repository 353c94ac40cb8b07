"""Client-level accounting that matches Flower's sampling: known answers, the issue's figures, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchshield.errors import InputError
from torchshield.federated.accounting import (
    accounting_record,
    check_accountable,
    client_level_epsilon,
    noise_for_target_epsilon,
)
from torchshield.federated.config import parse_config

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def _gaussian_rdp_epsilon(z: float, rounds: int, delta: float, orders=None) -> float:
    """Independent reference without amplification: RDP of the Gaussian mechanism is alpha / (2 z^2)
    per round, converted with the classic bound eps = rdp + log(1/delta) / (alpha - 1) (Mironov 2017)
    minimised over dp-accounting's default orders."""
    from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant

    orders = orders or RdpAccountant()._orders
    return min(rounds * a / (2 * z * z) + math.log(1 / delta) / (a - 1) for a in orders)


def test_issue_figures_without_replacement_replace_one() -> None:
    # 100 clients, 10 a round, z = 1, 100 rounds: the old Poisson formula said 7.90; the valid
    # without-replacement bound (replace-one, sensitivity 2C) is 83.9
    eps = client_level_epsilon(noise_multiplier=1.0, clients=100, per_round=10, rounds=100, delta=1e-5)
    assert eps == pytest.approx(83.9, abs=0.05)
    assert eps > 7.90 * 10


@pytest.mark.parametrize(("z", "rounds"), [(1.0, 10), (2.0, 100)])
def test_full_participation_is_gaussian_composition_for_both_relations(z: float, rounds: int) -> None:
    # add/remove: sensitivity C -> noise multiplier z; replace-one: sensitivity 2C -> z / 2
    ar = client_level_epsilon(noise_multiplier=z, clients=5, per_round=5, rounds=rounds, delta=1e-5,
                              neighbouring="add-remove")
    r1 = client_level_epsilon(noise_multiplier=z, clients=5, per_round=5, rounds=rounds, delta=1e-5)
    assert ar <= _gaussian_rdp_epsilon(z, rounds, 1e-5) + 1e-9 and ar >= 0.9 * _gaussian_rdp_epsilon(z, rounds, 1e-5)
    assert r1 <= _gaussian_rdp_epsilon(z / 2, rounds, 1e-5) + 1e-9
    assert r1 > 2 * ar


def test_add_remove_with_partial_participation_is_refused() -> None:
    with pytest.raises(InputError, match="add-remove"):
        check_accountable(clients=100, per_round=10, neighbouring="add-remove")
    with pytest.raises(InputError, match="neighbouring"):
        parse_config({"clients": 10, "fraction_fit": 0.5,
                      "privacy": {"noise_multiplier": 1.0, "neighbouring": "add-remove"}})
    with pytest.raises(InputError, match="neighbouring"):
        check_accountable(clients=10, per_round=10, neighbouring="swap")


def test_monotone_and_inverse() -> None:
    eps = [client_level_epsilon(noise_multiplier=1.0, clients=10, per_round=3, rounds=r, delta=1e-5)
           for r in (1, 5, 20)]
    assert np.all(np.diff(eps) > 0)
    assert client_level_epsilon(noise_multiplier=0.0, clients=10, per_round=3, rounds=1, delta=1e-5) == math.inf
    z = noise_for_target_epsilon(target_epsilon=4.0, clients=10, per_round=5, rounds=10, delta=1e-5)
    spent = client_level_epsilon(noise_multiplier=z, clients=10, per_round=5, rounds=10, delta=1e-5)
    assert 4.0 * 0.97 <= spent <= 4.0


def test_record_states_relation_and_sampling() -> None:
    rec = accounting_record(noise_multiplier=1.0, clients=100, per_round=10, rounds=100, delta=1e-5,
                            neighbouring="replace-one", clip=1.0)
    assert rec["neighbouring"] == "replace-one client" and "without replacement" in rec["sampling"]
    assert rec["epsilon"] == pytest.approx(83.9, abs=0.05) and rec["accountant"].startswith("rdp (flwr")
