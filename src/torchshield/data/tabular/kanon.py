"""k-anonymity by Mondrian multidimensional partitioning, with l-diversity, optional
t-closeness, a re-identification risk report and information-loss metrics.

Threat model (prosecutor): the attacker knows the target is in the release and knows their
quasi-identifiers (age, sex, ZIP, ...). Each equivalence class of the output has >= k rows, so
the chance of picking the right row is <= 1/k; with ``l`` every class also holds >= l distinct
sensitive values (no homogeneity attack), with ``t`` the sensitive distribution of every class
is within total-variation distance t of the whole table's.

Algorithm: LeFevre et al., "Mondrian Multidimensional K-Anonymity" (ICDE 2006), strict
partitioning: split the partition on the quasi-identifier with the widest normalised range at
its median while both halves stay valid; leaves become equivalence classes, generalised to
ranges (numbers, dates), common prefixes (codes such as ZIP or region) or the lowest common
ancestor in a user hierarchy (categories)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from torchshield.data.dtypes import is_text as _is_text
from torchshield.errors import InputError, PolicyError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["KAnonResult", "QuasiIdentifier", "kanonymize", "risk_metrics"]


@dataclass
class QuasiIdentifier:
    """How one column is generalised. ``kind``: numeric, date, prefix, categorical."""

    name: str
    kind: str
    codes: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    labels: list[str] = field(repr=False, default_factory=list)  # for prefix/categorical: code -> value
    parent: dict[str, str] = field(repr=False, default_factory=dict)
    leaves_under: dict[str, int] = field(repr=False, default_factory=dict)


@dataclass
class KAnonResult:
    table: Any  # pandas.DataFrame: released rows, quasi-identifiers generalised
    report: dict[str, Any]


def _classify(name: str, series: pd.Series, hierarchy: Mapping[str, str] | None) -> QuasiIdentifier:
    import pandas as pd

    text = _is_text(series)
    values = series.astype(str).str.strip() if text else series
    if hierarchy:
        return _categorical(name, values.astype(str), dict(hierarchy))
    if not text:
        return QuasiIdentifier(name, "numeric", codes=series.to_numpy(dtype=float))
    num = pd.to_numeric(values, errors="coerce")
    if num.notna().all():
        strs = values.astype(str)
        if strs.str.fullmatch(r"0\d+").any() or (strs.str.len().nunique() == 1 and strs.str.len().iloc[0] >= 5):
            return _prefix(name, strs)  # zero-padded or fixed-width codes: ZIP, region code
        return QuasiIdentifier(name, "numeric", codes=num.to_numpy(dtype=float))
    if values.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all():
        days = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
        if days.notna().all():
            return QuasiIdentifier(name, "date", codes=(days.astype("int64") // 86_400_000_000_000).to_numpy(float))
    return _categorical(name, values.astype(str), {})


def _prefix(name: str, values: pd.Series) -> QuasiIdentifier:
    uniq = sorted(set(values.tolist()))
    index = {v: i for i, v in enumerate(uniq)}
    return QuasiIdentifier(name, "prefix", codes=values.map(index).to_numpy(dtype=float), labels=uniq)


def _categorical(name: str, values: pd.Series, parent: dict[str, str]) -> QuasiIdentifier:
    present = set(values.tolist())
    missing = sorted(v for v in present if parent and v not in parent)
    if parent and missing:
        raise InputError(f"hierarchy for {name!r} has no parent for value(s): {', '.join(missing[:5])}",
                         hint="map every leaf value to its parent category")
    # Order leaves so that every subtree is contiguous: sort by the path from the root.
    def path(v: str) -> tuple[str, ...]:
        p = [v]
        seen = {v}
        while p[-1] in parent:
            nxt = parent[p[-1]]
            if nxt in seen:
                raise InputError(f"hierarchy for {name!r} has a cycle at {nxt!r}")
            seen.add(nxt)
            p.append(nxt)
        return tuple(reversed(p))

    uniq = sorted(present, key=path)
    index = {v: i for i, v in enumerate(uniq)}
    q = QuasiIdentifier(name, "categorical", codes=values.map(index).to_numpy(dtype=float), labels=uniq,
                        parent=parent)
    for v in uniq:
        for anc in path(v)[:-1]:
            q.leaves_under[anc] = q.leaves_under.get(anc, 0) + 1
    return q


def _mondrian(X: np.ndarray, k: int, sens: np.ndarray | None, n_sens: int, l: int | None,  # noqa: E741 - l-diversity's own letter
              t: float | None, global_dist: np.ndarray | None) -> list[np.ndarray]:
    span = X.max(axis=0) - X.min(axis=0)
    span[span == 0] = 1.0

    def valid(idx: np.ndarray) -> bool:
        if len(idx) < k:
            return False
        if sens is None:
            return True
        counts = np.bincount(sens[idx], minlength=n_sens)
        if l is not None and np.count_nonzero(counts) < l:
            return False
        if t is not None and global_dist is not None:
            return 0.5 * np.abs(counts / len(idx) - global_dist).sum() <= t
        return True

    leaves: list[np.ndarray] = []
    stack = [np.arange(len(X))]
    while stack:
        idx = stack.pop()
        if len(idx) < 2 * k:
            leaves.append(idx)
            continue
        sub = X[idx]
        lo, hi = sub.min(axis=0), sub.max(axis=0)
        split = False
        for d in np.argsort(-(hi - lo) / span):
            if hi[d] == lo[d]:
                break  # dimensions are sorted by spread: the rest are constant too
            col = sub[:, d]
            med = np.partition(col, len(col) // 2)[len(col) // 2]
            mask = col < med if med == hi[d] else col <= med
            left, right = idx[mask], idx[~mask]
            if valid(left) and valid(right):
                stack.append(left)
                stack.append(right)
                split = True
                break
        if not split:
            leaves.append(idx)
    return leaves


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _label(q: QuasiIdentifier, lo: float, hi: float, codes: np.ndarray) -> tuple[str, float, float]:
    """(generalised label, normalised certainty penalty) for one class on one quasi-identifier."""
    import datetime as dt

    if q.kind == "numeric":
        return (_fmt_num(lo) if lo == hi else f"[{_fmt_num(lo)}-{_fmt_num(hi)}]"), hi - lo, 0.0
    if q.kind == "date":
        a = dt.date(1970, 1, 1) + dt.timedelta(days=int(lo))
        b = dt.date(1970, 1, 1) + dt.timedelta(days=int(hi))
        if a == b:
            return a.isoformat(), 0.0, 0.0
        if (a.year, a.month) == (b.year, b.month):
            return f"{a:%Y-%m}", hi - lo, 0.0
        if a.year == b.year:
            return f"{a.year}", hi - lo, 0.0
        return f"[{a.isoformat()}~{b.isoformat()}]", hi - lo, 0.0
    first, last = q.labels[int(lo)], q.labels[int(hi)]
    if q.kind == "prefix":
        n = 0
        while n < min(len(first), len(last)) and first[n] == last[n]:
            n += 1
        width = max(len(first), len(last))
        return first[:n] + "*" * (width - n), 0.0, (1 - n / width) if width else 0.0
    if lo == hi:
        return first, 0.0, 0.0
    if q.parent:
        anc_a = _ancestors(first, q.parent)
        anc_b = set(_ancestors(last, q.parent))
        lca = next((a for a in anc_a if a in anc_b), "*")
        under = q.leaves_under.get(lca, len(q.labels))
        return lca, 0.0, (under - 1) / max(1, len(q.labels) - 1)
    present = sorted({q.labels[int(c)] for c in codes})
    label = "{" + ",".join(present) + "}" if len(present) <= 6 else "*"
    return label, 0.0, (len(present) - 1) / max(1, len(q.labels) - 1)


def _ancestors(v: str, parent: Mapping[str, str]) -> list[str]:
    out = [v]
    while out[-1] in parent:
        out.append(parent[out[-1]])
    return out


def risk_metrics(class_sizes: np.ndarray, *, threshold: float = 0.2) -> dict[str, Any]:
    """Prosecutor re-identification risk from equivalence-class sizes (one entry per record's class)."""
    n = int(class_sizes.sum()) if len(class_sizes) else 0
    if n == 0:
        return {"records": 0, "max": 0.0, "avg": 0.0, "records_at_risk": 0, "threshold": threshold}
    risky = class_sizes[1.0 / class_sizes > threshold].sum()
    return {"records": n, "classes": int(len(class_sizes)), "max": round(float(1.0 / class_sizes.min()), 6),
            "avg": round(float(len(class_sizes) / n), 6), "records_at_risk": int(risky),
            "records_at_risk_fraction": round(float(risky / n), 6), "threshold": threshold,
            "unique_records": int((class_sizes == 1).sum())}


def kanonymize(df: pd.DataFrame, quasi: Sequence[str], *, k: int, l: int | None = None, t: float | None = None,  # noqa: E741 - l-diversity's own letter
               sensitive: str | None = None, hierarchies: Mapping[str, Mapping[str, str]] | None = None,
               max_suppress: float = 0.05, risk_threshold: float = 0.2) -> KAnonResult:
    """Generalise ``quasi`` columns of ``df`` until every class has >= ``k`` rows (and >= ``l``
    distinct ``sensitive`` values, and t-closeness <= ``t`` if given).

    Rows whose quasi-identifiers are missing are suppressed; more than ``max_suppress`` of the
    table suppressed, or a table that cannot meet the target at all, is refused (PolicyError)."""
    import pandas as pd

    if k < 2:
        raise InputError("k must be at least 2")
    missing = [c for c in [*quasi, *([sensitive] if sensitive else [])] if c not in df.columns]
    if missing:
        raise InputError(f"column {missing[0]!r} is not in the table", hint=f"columns: {', '.join(map(str, df.columns))}")
    if (l is not None or t is not None) and sensitive is None:
        raise InputError("--l and --t need --sensitive (the column whose values must stay diverse)")
    if l is not None and l < 1:
        raise InputError("l must be at least 1")
    if t is not None and not 0 < t <= 1:
        raise InputError("t must be in (0, 1]")
    n_in = len(df)
    blank = np.zeros(n_in, dtype=bool)
    for c in quasi:
        col = df[c]
        blank |= col.isna().to_numpy() | (col.astype(str).str.strip() == "").to_numpy()
    work = df.loc[~blank].reset_index(drop=True)
    suppressed = int(blank.sum())
    hier = hierarchies or {}
    qis = [_classify(c, work[c], hier.get(c)) for c in quasi]
    X = np.column_stack([q.codes for q in qis]) if len(work) else np.empty((0, len(qis)))
    sens = None
    n_sens = 0
    global_dist = None
    if sensitive is not None and len(work):
        sens_codes, uniques = pd.factorize(work[sensitive].astype(str))
        sens = sens_codes.astype(np.int64)
        n_sens = len(uniques)
        global_dist = np.bincount(sens, minlength=n_sens) / len(sens)
    risk_before = _risk_before(work, quasi, risk_threshold)
    root_ok = len(work) >= k and (sens is None or l is None or n_sens >= l)
    if not root_ok:
        raise PolicyError(f"the table cannot be made {k}-anonymous"
                          + (f" with l={l}" if l else "") + f" ({len(work)} usable rows, {n_sens} sensitive values)",
                          hint="lower k or l, or release more rows")
    leaves = _mondrian(X, k, sens, n_sens, l, t, global_dist)
    out = work.copy()
    ncp_total = np.zeros(len(qis))
    ranges = X.max(axis=0) - X.min(axis=0) if len(X) else np.ones(len(qis))
    sizes = np.empty(len(work), dtype=np.int64)
    labels = [np.empty(len(work), dtype=object) for _ in qis]
    l_min = None
    t_max = 0.0
    for idx in leaves:
        sizes[idx] = len(idx)
        sub = X[idx]
        for j, q in enumerate(qis):
            lo, hi = sub[:, j].min(), sub[:, j].max()
            label, width, cat_pen = _label(q, lo, hi, sub[:, j])
            labels[j][idx] = label
            pen = (width / ranges[j] if ranges[j] else 0.0) if q.kind in ("numeric", "date") else cat_pen
            ncp_total[j] += pen * len(idx)
        if sens is not None and global_dist is not None:  # set together above
            counts = np.bincount(sens[idx], minlength=n_sens)
            distinct = int(np.count_nonzero(counts))
            l_min = distinct if l_min is None else min(l_min, distinct)
            t_max = max(t_max, float(0.5 * np.abs(counts / len(idx) - global_dist).sum()))
    for j, q in enumerate(qis):
        out[q.name] = labels[j]
    if suppressed > max_suppress * n_in:
        raise PolicyError(f"{suppressed} rows ({suppressed / n_in:.1%}) have missing quasi-identifiers, "
                          f"over the suppression budget of {max_suppress:.1%}",
                          hint="fill or drop them first, or raise --max-suppress")
    class_sizes = np.array([len(i) for i in leaves], dtype=np.int64)
    per_record = sizes
    n = len(work)
    report = {
        "k": k, "l": l, "t": t, "quasi_identifiers": {q.name: q.kind for q in qis}, "sensitive": sensitive,
        "rows_in": n_in, "rows_released": n, "suppressed_rows": suppressed,
        "classes": len(leaves), "min_class_size": int(class_sizes.min()) if len(class_sizes) else 0,
        "mean_class_size": round(float(class_sizes.mean()), 3) if len(class_sizes) else 0.0,
        "l_achieved": l_min, "t_achieved": round(t_max, 6) if sens is not None else None,
        "information_loss": {
            "ncp": round(float(ncp_total.sum() / (n * len(qis))), 6) if n else 0.0,
            "ncp_per_column": {q.name: round(float(ncp_total[j] / n), 6) if n else 0.0 for j, q in enumerate(qis)},
            "discernibility": int((class_sizes.astype(np.float64) ** 2).sum() + suppressed * n_in),
        },
        "risk_before": risk_before,
        "risk_after": risk_metrics(class_sizes, threshold=risk_threshold),
        "records_in_small_classes": int(per_record[per_record < 2 * k].size),
        "model": "prosecutor",
    }
    return KAnonResult(out, report)


def _risk_before(df: pd.DataFrame, quasi: Sequence[str], threshold: float) -> dict[str, Any]:
    if not len(df):
        return risk_metrics(np.empty(0), threshold=threshold)
    sizes = df.groupby(list(quasi), dropna=False, sort=False).size().to_numpy()
    return risk_metrics(sizes.astype(np.int64), threshold=threshold)


