"""DP aggregate queries over a table, each charged to the persistent ledger before it is answered.

Threat model. The analyst sees only noisy answers and may ask adaptively and repeatedly, from
several processes. Each answer is (epsilon, delta)-DP for adding or removing one row; the
ledger composes them (basic composition) against the data set's lifetime budget and refuses
the query that would overspend. Sensitivities need public bounds: a sum, mean or quantile of
a column without declared bounds is refused (clipping to bounds computed from the data would
itself leak). Histogram keys must be declared (public), or bins over declared bounds.

Noise comes from ``secrets.SystemRandom`` (the OS CSPRNG) unless a test passes ``rng``. We
do not implement the snapping mechanism, so textbook floating-point attacks on Laplace noise
(Mironov 2012) are not defended against; see docs/privacy.md.

Mechanisms: Laplace (pure epsilon-DP, L1 sensitivity); Gaussian, calibrated with the analytic
Gaussian mechanism of Balle & Wang (2018) (tight for any epsilon, L2 sensitivity); quantiles
use the exponential mechanism over the bounded domain (Smith 2011), pure epsilon-DP.
"""

from __future__ import annotations

import getpass
import hashlib
import math
import random
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchshield.crypto.keys import MasterKey
from torchshield.errors import InputError
from torchshield.privacy.ledger import Ledger

__all__ = ["Dataset", "gaussian_sigma", "laplace_noise"]

MECHANISMS = ("gaussian", "laplace")


def laplace_noise(scale: float, rng: random.Random) -> float:
    """Laplace(0, scale) as the difference of two exponentials."""
    return scale * (rng.expovariate(1.0) - rng.expovariate(1.0))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest sigma for which the Gaussian mechanism is (epsilon, delta)-DP (Balle & Wang 2018, Thm 8).

    Bisection on the exact privacy profile delta(sigma); returned sigma errs upwards."""
    from scipy.stats import norm

    if not (epsilon > 0 and 0 < delta < 1):
        raise InputError("the Gaussian mechanism needs epsilon > 0 and 0 < delta < 1")

    def delta_of(sigma: float) -> float:
        a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
        return float(norm.cdf(a - b) - math.exp(epsilon) * norm.cdf(-a - b))

    lo, hi = 1e-6 * sensitivity, sensitivity
    while delta_of(hi) > delta:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if delta_of(mid) <= delta else (mid, hi)
    return hi


class Dataset:
    """A table that answers DP queries against its budget in ``ledger``.

    Identity is a fingerprint of the table's content (column names, types and values), so the
    same rows loaded from a renamed or re-saved file share one budget."""

    def __init__(self, data: Any, *, ledger: Ledger | str | None = None, key: MasterKey | None = None,
                 bounds: dict[str, Sequence[float]] | None = None, budget: tuple[float, float] | None = None,
                 actor: str | None = None, name: str = "", rng: random.Random | None = None) -> None:
        import pandas as pd

        if isinstance(data, (str, Path)):
            from torchshield.data.tabular.io import read_table  # the one table reader (GB18030 too)

            name = name or Path(data).name
            data = read_table(data, typed=True)
        if not isinstance(data, pd.DataFrame):
            raise InputError("Dataset needs a pandas DataFrame or a CSV/Parquet path")
        self.df = data
        self.bounds = {k: (float(v[0]), float(v[1])) for k, v in (bounds or {}).items()}
        for col, (lo, hi) in self.bounds.items():
            if col not in data.columns:
                raise InputError(f"bounds: column {col!r} not in the data")
            if not lo < hi:
                raise InputError(f"bounds for {col!r}: lower {lo} must be < upper {hi}")
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger, key=key)
        self.actor = actor or _whoami()
        self.rng = rng or secrets.SystemRandom()
        self.dataset_id = fingerprint(data)
        if budget is not None:
            if len(data) and budget[1] >= 1.0 / len(data):
                raise InputError(f"budget delta={budget[1]:g} is >= 1/N for N={len(data)} rows: a mechanism could "
                                 "then publish whole records", hint="use a delta far below 1/N, or 0")
            self.ledger.register(self.dataset_id, epsilon=budget[0], delta=budget[1], name=name, actor=self.actor)
        elif not self.ledger.is_registered(self.dataset_id):
            raise InputError(f"data set {name or self.dataset_id[:12]} has no privacy budget yet",
                             hint="give a budget for its first query, e.g. --budget-epsilon 1 --budget-delta 1e-6")

    # -- helpers ---------------------------------------------------------------------------
    def _column(self, column: str) -> Any:
        if column not in self.df.columns:
            raise InputError(f"column {column!r} not found", hint=f"columns: {list(self.df.columns)[:20]}")
        return self.df[column]

    def _bounded(self, column: str) -> tuple[Any, float, float]:
        series = self._column(column)
        if column not in self.bounds:
            raise InputError(f"column {column!r} has no declared bounds; DP sums, means and quantiles need them",
                             hint=f"declare public bounds, e.g. --bounds {column}=0:100")
        lo, hi = self.bounds[column]
        import pandas as pd

        values = pd.to_numeric(series, errors="coerce")
        if values.isna().any():
            raise InputError(f"column {column!r} has missing or non-numeric values", hint="clean or impute them")
        return values.clip(lo, hi).to_numpy(dtype=float), lo, hi

    def _release(self, plan: dict[str, Any], mechanism: str, scale: float, epsilon: float, delta: float,
                 compute: Any) -> Any:
        charge = self.ledger.charge(self.dataset_id, plan=plan, mechanism=mechanism, noise_scale=scale,
                                    epsilon=epsilon, delta=delta, actor=self.actor)
        if charge.cached:
            return charge.answer
        answer = compute()  # the noise is drawn only after the charge is durable
        charge.commit(answer)
        return answer

    def _noise(self, mechanism: str, epsilon: float, delta: float, l1: float, l2: float) -> tuple[float, Any]:
        if mechanism not in MECHANISMS:
            raise InputError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
        if not epsilon > 0:
            raise InputError(f"epsilon must be > 0, got {epsilon}")
        if mechanism == "laplace":
            if delta:
                raise InputError("the Laplace mechanism is pure epsilon-DP: pass delta=0 or use gaussian")
            scale = l1 / epsilon
            return scale, lambda: laplace_noise(scale, self.rng)
        sigma = gaussian_sigma(epsilon, delta, l2)
        return sigma, lambda: self.rng.gauss(0.0, sigma)

    # -- queries ---------------------------------------------------------------------------
    def count(self, *, epsilon: float, delta: float = 0.0, mechanism: str = "laplace") -> float:
        scale, noise = self._noise(mechanism, epsilon, delta, 1.0, 1.0)
        plan = {"query": "count", "epsilon": epsilon, "delta": delta, "mechanism": mechanism}
        return self._release(plan, mechanism, scale, epsilon, delta, lambda: len(self.df) + noise())

    def sum(self, column: str, *, epsilon: float, delta: float = 0.0, mechanism: str = "laplace") -> float:
        values, lo, hi = self._bounded(column)
        sens = max(abs(lo), abs(hi))
        scale, noise = self._noise(mechanism, epsilon, delta, sens, sens)
        plan = {"query": "sum", "column": column, "bounds": [lo, hi], "epsilon": epsilon, "delta": delta,
                "mechanism": mechanism}
        return self._release(plan, mechanism, scale, epsilon, delta, lambda: float(values.sum()) + noise())

    def mean(self, column: str, *, epsilon: float, delta: float = 0.0, mechanism: str = "laplace") -> float:
        """Noisy sum / noisy count, each with half the budget, clamped to the bounds."""
        values, lo, hi = self._bounded(column)
        # shift to a range centred on 0 so the sum's sensitivity is half the width
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        s_scale, s_noise = self._noise(mechanism, epsilon / 2, delta / 2, half, half)
        _c_scale, c_noise = self._noise(mechanism, epsilon / 2, delta / 2, 1.0, 1.0)
        plan = {"query": "mean", "column": column, "bounds": [lo, hi], "epsilon": epsilon, "delta": delta,
                "mechanism": mechanism}

        def compute() -> float:
            noisy_sum = float((values - mid).sum()) + s_noise()
            noisy_count = max(1.0, len(values) + c_noise())
            return min(hi, max(lo, mid + noisy_sum / noisy_count))

        return self._release(plan, mechanism, s_scale, epsilon, delta, compute)

    def histogram(self, column: str, *, epsilon: float, delta: float = 0.0, mechanism: str = "laplace",
                  categories: Sequence[Any] | None = None, bins: int | None = None) -> dict[str, float]:
        """Counts per declared category, or per equal-width bin over the declared bounds.

        Adding or removing a row changes one count by one: L1 = L2 = 1."""
        series = self._column(column)
        if categories is not None:
            keys = [str(c) for c in categories]
            counts = series.astype(str).value_counts()
            exact = {k: int(counts.get(k, 0)) for k in keys}
            spec: dict[str, Any] = {"categories": keys}
        elif bins is not None:
            values, lo, hi = self._bounded(column)
            import numpy as np

            hist, edges = np.histogram(values, bins=int(bins), range=(lo, hi))
            exact = {f"[{edges[i]:g}, {edges[i + 1]:g})": int(hist[i]) for i in range(len(hist))}
            spec = {"bins": int(bins), "bounds": [lo, hi]}
        else:
            raise InputError(f"histogram of {column!r} needs declared categories or bins over declared bounds",
                             hint="releasing the keys found in the data would leak rare values")
        scale, noise = self._noise(mechanism, epsilon, delta, 1.0, 1.0)
        plan = {"query": "histogram", "column": column, **spec, "epsilon": epsilon, "delta": delta,
                "mechanism": mechanism}
        return self._release(plan, mechanism, scale, epsilon, delta,
                             lambda: {k: v + noise() for k, v in exact.items()})

    def quantile(self, column: str, q: float, *, epsilon: float) -> float:
        """The exponential mechanism over intervals between sorted, clipped values (pure epsilon-DP)."""
        if not 0 <= q <= 1:
            raise InputError(f"quantile q must be in [0, 1], got {q}")
        if not epsilon > 0:
            raise InputError(f"epsilon must be > 0, got {epsilon}")
        values, lo, hi = self._bounded(column)
        plan = {"query": "quantile", "column": column, "q": q, "bounds": [lo, hi], "epsilon": epsilon,
                "mechanism": "exponential"}

        def compute() -> float:
            import numpy as np

            z = np.concatenate([[lo], np.sort(values), [hi]])
            widths = np.diff(z)
            ranks = np.arange(len(widths))
            utility = -np.abs(ranks - q * len(values))
            with np.errstate(divide="ignore"):
                logw = np.log(widths) + epsilon * utility / 2  # utility has sensitivity 1
            logw -= logw.max()
            p = np.exp(logw)
            p /= p.sum()
            u = self.rng.random() * p.sum()
            i = min(int(np.searchsorted(np.cumsum(p), u, side="right")), len(p) - 1)
            return float(z[i] + self.rng.random() * widths[i])

        return self._release(plan, "exponential", 2.0 / epsilon, epsilon, 0.0, compute)


def fingerprint(df: Any) -> str:
    """SHA-256 over column names, dtypes and row hashes (order of rows kept: a reorder is a new version)."""
    import pandas as pd

    h = hashlib.sha256()
    for col in df.columns:
        h.update(f"{col}\x00{df[col].dtype}\x00".encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"
