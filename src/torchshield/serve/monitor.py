"""Extraction monitoring: per-key query statistics and alerts when a key looks like it is
copying the model.

Heuristics, each configurable and each raising at most one alert per key and kind:

* ``budget``: a key sent more than ``query_budget`` inputs (a stolen model needs many labels).
* ``prada``: the PRADA distance test (Juuti et al., 2019). For every input, the minimum L2
  distance to the key's earlier inputs is recorded; benign traffic gives a roughly normal
  distribution of these distances, synthetic extraction queries (perturbations around seeds,
  Jacobian augmentation) do not. When the Shapiro-Wilk statistic of the last ``window``
  distances falls below ``prada_threshold`` the key is flagged.
* ``near_duplicates``: more than ``dup_ratio`` of recent inputs lie within ``dup_eps`` (relative
  to the typical input norm) of an earlier one: probing a decision boundary by small steps.

Label entropy of the key's predictions is reported too (an extractor tends to cover every class
evenly). State is per worker process and bounded (``max_history`` inputs per key); alerts go to
the log, ``/metrics`` and the audit log (the HTTP layer does that). This flags, it does not
block: a false positive must not take down a legitimate client.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Alert", "ExtractionMonitor", "MonitorConfig"]


@dataclass(frozen=True)
class MonitorConfig:
    query_budget: int = 100_000
    min_queries: int = 100
    window: int = 500
    prada_threshold: float = 0.90
    test_every: int = 25
    dup_eps: float = 1e-3
    dup_ratio: float = 0.5
    max_history: int = 1000


@dataclass(frozen=True)
class Alert:
    key_id: str
    kind: str
    detail: dict[str, Any]


@dataclass
class _KeyStats:
    queries: int = 0
    history: Any = None  # ring buffer (max_history x features, float64), filled up to ``filled`` rows
    norms: Any = None  # squared norms of the history rows
    filled: int = 0
    cursor: int = 0
    distances: deque = field(default_factory=deque)  # given maxlen=window on creation
    dups: deque = field(default_factory=deque)
    labels: Counter = field(default_factory=Counter)
    alerted: set = field(default_factory=set)
    last_w: float | None = None


class ExtractionMonitor:
    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self._stats: dict[str, _KeyStats] = {}
        self._lock = threading.Lock()
        self.alerts_total: Counter = Counter()

    def warm_up(self) -> None:
        """Import SciPy now (seconds) rather than inside the first request that runs the test."""
        import scipy.stats  # noqa: F401

    def observe(self, key_id: str, inputs: Any, labels: Any = ()) -> list[Alert]:
        """Record a batch (2-D array-like, one input per row) and its predicted labels."""
        import numpy as np

        cfg = self.config
        x = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
        with self._lock:
            st = self._stats.get(key_id)
            if st is None:
                st = self._stats[key_id] = _KeyStats(distances=deque(maxlen=cfg.window), dups=deque(maxlen=cfg.window))
            alerts: list[Alert] = []
            before = st.queries
            self._observe_rows(st, x)
            st.queries += len(x)
            if st.queries // cfg.test_every > before // cfg.test_every:
                alerts += self._test(key_id, st)
            st.labels.update(int(v) for v in labels)
            if st.queries > cfg.query_budget:
                alerts += self._raise(key_id, st, "budget", {"queries": st.queries, "budget": cfg.query_budget})
            for a in alerts:
                self.alerts_total[a.kind] += 1
            return alerts

    def _observe_rows(self, st: _KeyStats, x: Any) -> None:
        """For each row, its distance to the nearest earlier input (history, then earlier rows of
        the batch), all rows at once: ``|a-b|^2 = |a|^2 + |b|^2 - 2ab`` in float64, one matrix
        product instead of a pass over the history per row."""
        import numpy as np

        cfg = self.config
        n, f = x.shape
        if n == 0:
            return
        if st.history is None or st.history.shape[1] != f:
            st.history, st.norms = np.empty((cfg.max_history, f)), np.empty(cfg.max_history)
            st.filled = st.cursor = 0
        sq = np.einsum("ij,ij->i", x, x)
        best = np.full(n, np.inf)
        if st.filled:
            d2 = sq[:, None] + st.norms[None, : st.filled] - 2.0 * (x @ st.history[: st.filled].T)
            best = d2.min(axis=1)
        if n > 1:
            d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
            d2[np.triu_indices(n)] = np.inf  # row i is compared with rows j < i only
            best = np.minimum(best, d2.min(axis=1))
        seen = np.isfinite(best)  # only the very first input of a key has nothing to compare with
        dist = np.sqrt(np.maximum(best[seen], 0.0))
        scale = np.sqrt(sq[seen])
        scale[scale == 0] = 1.0
        st.distances.extend(dist.tolist())
        st.dups.extend((dist <= cfg.dup_eps * scale).tolist())
        keep = min(n, cfg.max_history)
        idx = (st.cursor + np.arange(n - keep, n)) % cfg.max_history
        st.history[idx], st.norms[idx] = x[n - keep:], sq[n - keep:]
        st.cursor = (st.cursor + n) % cfg.max_history
        st.filled = min(st.filled + n, cfg.max_history)

    def _test(self, key_id: str, st: _KeyStats) -> list[Alert]:
        cfg = self.config
        if len(st.distances) < cfg.min_queries:
            return []
        out: list[Alert] = []
        ratio = sum(st.dups) / len(st.dups)
        if ratio > cfg.dup_ratio:
            out += self._raise(key_id, st, "near_duplicates", {"ratio": round(ratio, 3)})
        import numpy as np
        from scipy.stats import shapiro

        d = np.asarray(st.distances)
        if float(d.std()) > 0:
            w = float(shapiro(d).statistic)
            st.last_w = w
            if w < cfg.prada_threshold:
                out += self._raise(key_id, st, "prada", {"shapiro_w": round(w, 4), "window": len(d)})
        return out

    def _raise(self, key_id: str, st: _KeyStats, kind: str, detail: dict[str, Any]) -> list[Alert]:
        if kind in st.alerted:
            return []
        st.alerted.add(kind)
        return [Alert(key_id, kind, {**detail, "queries": st.queries})]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per-key statistics for ``/metrics`` (key ids only)."""
        with self._lock:
            return {k: {"queries": s.queries, "label_entropy_bits": _entropy(s.labels),
                        "prada_w": s.last_w, "alerts": sorted(s.alerted)} for k, s in self._stats.items()}


def _entropy(counts: Counter) -> float:
    n = sum(counts.values())
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in counts.values() if c)
