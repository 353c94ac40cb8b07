"""Partitions: seeded, disjoint, covering, every client non-empty; alpha controls label skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshield.errors import InputError
from torchshield.federated.partition import dirichlet_partition, iid_partition


def _check_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n  # disjoint and covering
    assert all(len(p) > 0 for p in parts)


def test_iid_sizes_and_seed() -> None:
    parts = iid_partition(1437, 10, seed=3)
    _check_cover(parts, 1437)
    assert {len(p) for p in parts} == {143, 144}
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(1437, 10, seed=3), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(1437, 10, seed=4), strict=True))


@settings(max_examples=40, deadline=None)
@given(n_clients=st.integers(1, 30), alpha=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_dirichlet_covers_and_never_leaves_a_client_empty(n_clients: int, alpha: float, seed: int) -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=300)
    parts = dirichlet_partition(labels, n_clients, alpha=alpha, seed=seed)
    _check_cover(parts, 300)


def _mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    ent = []
    for p in parts:
        counts = np.bincount(labels[p], minlength=10) / len(p)
        nz = counts[counts > 0]
        ent.append(-(nz * np.log(nz)).sum())
    return float(np.mean(ent))


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    labels = np.repeat(np.arange(10), 150)
    skewed = _mean_label_entropy(dirichlet_partition(labels, 10, alpha=0.1, seed=0), labels)
    mild = _mean_label_entropy(dirichlet_partition(labels, 10, alpha=100.0, seed=0), labels)
    iid = _mean_label_entropy(iid_partition(len(labels), 10, seed=0), labels)
    assert skewed < 1.2 < mild and abs(mild - iid) < 0.1  # log(10) = 2.30 is a uniform label mix


def test_bad_partition_input() -> None:
    with pytest.raises(InputError, match="larger than the training samples"):
        iid_partition(5, 6, seed=0)
    with pytest.raises(InputError, match="alpha must be > 0"):
        dirichlet_partition(np.zeros(10, dtype=int), 2, alpha=0.0, seed=0)
