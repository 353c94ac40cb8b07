"""Extraction monitoring: benign traffic stays quiet, PRADA-style synthetic queries and query
budgets raise one alert each."""

from __future__ import annotations

import numpy as np

from torchshield.serve.monitor import ExtractionMonitor, MonitorConfig


def test_benign_gaussian_traffic_raises_no_alert():
    rng = np.random.default_rng(0)
    mon = ExtractionMonitor(MonitorConfig(min_queries=100, window=300))
    alerts = []
    for _ in range(30):
        alerts += mon.observe("k", rng.normal(size=(10, 8)), rng.integers(0, 4, 10))
    assert alerts == [] and mon.snapshot()["k"]["queries"] == 300


def test_synthetic_perturbation_queries_raise_prada_alert():
    rng = np.random.default_rng(1)
    mon = ExtractionMonitor(MonitorConfig(min_queries=100, window=300))
    seeds = rng.normal(size=(5, 8))
    alerts = []
    for i in range(300):  # Jacobian-augmentation style: tiny steps around a few seeds, plus new seeds
        base = seeds[i % 5] if i % 10 else rng.normal(size=8) * 5
        alerts += mon.observe("attacker", (base + rng.normal(scale=0.01, size=8))[None, :], [0])
    kinds = [a.kind for a in alerts]
    assert "prada" in kinds and kinds.count("prada") == 1
    assert mon.alerts_total["prada"] == 1


def test_near_duplicates_and_budget():
    mon = ExtractionMonitor(MonitorConfig(min_queries=50, test_every=10, query_budget=120))
    x = np.ones((10, 8))
    alerts = []
    for _ in range(13):
        alerts += mon.observe("k", x, [1] * 10)
    kinds = {a.kind for a in alerts}
    assert {"near_duplicates", "budget"} <= kinds
    assert mon.snapshot()["k"]["label_entropy_bits"] == 0.0


def test_distances_match_a_brute_force_nearest_earlier_input():
    """The vectorized distances equal a plain nearest-earlier-neighbour search over the history
    (the last ``max_history`` inputs before the batch, across the ring buffer's wrap) and the
    earlier rows of the same batch."""
    rng = np.random.default_rng(3)
    cfg = MonitorConfig(max_history=50, window=1000, test_every=10**9)
    mon = ExtractionMonitor(cfg)
    seen: list[np.ndarray] = []
    expected: list[float] = []
    for size in [1, 7, 1, 30, 64, 3, 1, 12]:  # 64 > max_history: the batch overwrites the whole buffer
        batch = rng.integers(0, 5, size=(size, 6)).astype(float)
        history = seen[-cfg.max_history:]
        for i, row in enumerate(batch):
            earlier = history + list(batch[:i])
            if earlier:
                expected.append(min(float(np.linalg.norm(row - h)) for h in earlier))
        seen += list(batch)
        mon.observe("k", batch, [0] * size)
    got = list(mon._stats["k"].distances)
    assert len(got) == len(expected) == len(seen) - 1
    np.testing.assert_allclose(got, expected, atol=1e-9)
