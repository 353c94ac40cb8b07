"""Client-level accounting: known answers (Gaussian composition at q = 1, Opacus reference cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchshield.federated.accounting import client_level_epsilon, noise_for_target_epsilon

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def _gaussian_composition_epsilon(z: float, rounds: int, delta: float) -> float:
    """Independent reference for q = 1: RDP of the Gaussian mechanism is alpha / (2 z^2) per round,
    converted with the bound Opacus uses (Balle et al. 2020), minimised over the same orders."""
    best = math.inf
    for a in ORDERS:
        rdp = rounds * a / (2 * z * z)
        eps = rdp - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
        best = min(best, eps)
    return best


@pytest.mark.parametrize(("z", "rounds"), [(1.0, 10), (0.5, 3), (2.0, 100)])
def test_full_participation_is_gaussian_composition(z: float, rounds: int) -> None:
    got = client_level_epsilon(noise_multiplier=z, sample_rate=1.0, rounds=rounds, delta=1e-5)
    assert got == pytest.approx(_gaussian_composition_epsilon(z, rounds, 1e-5), rel=1e-9)


def test_matches_reference_case_b() -> None:
    # anchors-measured.md, case b: q 0.01, sigma 1.0, 10000 steps -> RDP eps 6.712738297403128
    got = client_level_epsilon(noise_multiplier=1.0, sample_rate=0.01, rounds=10000, delta=1e-5)
    assert got == pytest.approx(6.712738297403128, rel=1e-9)


def test_monotone_and_inverse() -> None:
    eps = [client_level_epsilon(noise_multiplier=1.0, sample_rate=0.3, rounds=r, delta=1e-5) for r in (1, 5, 20)]
    assert np.all(np.diff(eps) > 0)
    assert client_level_epsilon(noise_multiplier=0.0, sample_rate=1.0, rounds=1, delta=1e-5) == math.inf
    z = noise_for_target_epsilon(target_epsilon=4.0, sample_rate=0.5, rounds=10, delta=1e-5)
    spent = client_level_epsilon(noise_multiplier=z, sample_rate=0.5, rounds=10, delta=1e-5)
    assert 4.0 - 0.01 <= spent <= 4.0
