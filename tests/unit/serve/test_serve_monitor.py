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
