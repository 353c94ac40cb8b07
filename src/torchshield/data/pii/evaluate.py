"""Span-overlap scoring of a detector against labelled records (the metric of
reference/anchors-measured.md): a gold span is found if a prediction of the same type overlaps
it; a prediction is correct if it overlaps a gold span of its type."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["score_spans"]

Span = tuple[str, int, int]


def score_spans(gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]],
                *, type_map: dict[str, str] | None = None,
                ignore: Callable[[str], bool] | None = None) -> dict[str, dict[str, Any]]:
    """Per-type and micro precision/recall/F1. ``type_map`` renames predicted types (to score
    another tool's labels); predicted types in ``ignore`` are not counted."""
    tp_g: dict[str, int] = defaultdict(int)
    n_g: dict[str, int] = defaultdict(int)
    tp_p: dict[str, int] = defaultdict(int)
    n_p: dict[str, int] = defaultdict(int)
    for g_spans, p_spans in zip(gold, predicted, strict=True):
        g = list(g_spans)
        p = [((type_map or {}).get(t, t), s, e) for t, s, e in p_spans]
        if ignore is not None:
            p = [x for x in p if not ignore(x[0])]
        for t, s, e in g:
            n_g[t] += 1
            tp_g[t] += any(pt == t and ps < e and s < pe for pt, ps, pe in p)
        for t, s, e in p:
            n_p[t] += 1
            tp_p[t] += any(gt == t and gs < e and s < ge for gt, gs, ge in g)
    out: dict[str, dict[str, Any]] = {}
    for t in sorted(set(n_g) | set(n_p)):
        out[t] = _prf(tp_p[t], n_p[t], tp_g[t], n_g[t])
    out["micro"] = _prf(sum(tp_p.values()), sum(n_p.values()), sum(tp_g.values()), sum(n_g.values()))
    return out


def _prf(tp_p: int, n_p: int, tp_g: int, n_g: int) -> dict[str, Any]:
    p = tp_p / n_p if n_p else (1.0 if not n_g else 0.0)
    r = tp_g / n_g if n_g else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4), "gold": n_g, "predicted": n_p}
