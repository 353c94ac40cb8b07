"""Warnings when attacks disagree: the signature of gradient masking.

Why: a defence that only hides gradients (input quantisation with a straight ``round()``,
saturated softmax, randomness, non-differentiable pre-processing) makes every gradient attack
report high robust accuracy while a score-based attack, which never reads a gradient, walks
straight through. Measured on a digits MLP behind 4-bit input quantisation: PGD and APGD-CE
report ~96% robust, Square ~46%. A gradient attack that is weaker than a random search is
broken on that model, so its figure must not be read as robustness.

Two signals, both in points of robust accuracy over the evaluated examples:

* across attacks at the same budget and norm: a gradient attack reports at least ``gap`` more
  robust accuracy than a score-based one;
* inside the standard ensemble: its score-based stage fooled at least ``gap`` of the examples on
  which every gradient stage had failed.

Both need at least ``min_examples`` examples of difference, so one lucky query on a tiny sample
does not raise the alarm. The threshold is a heuristic, not a test with an error rate: on the
unprotected digits models the ensemble's Square stage adds 0 to 1 point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MASKING_GAP", "MIN_EXAMPLES", "MaskingInput", "masking_warnings"]

MASKING_GAP = 0.03  # 3 points of robust accuracy
MIN_EXAMPLES = 3


@dataclass(frozen=True)
class MaskingInput:
    """One evaluated (attack, eps) as the masking check needs it."""

    attack: str
    access: str  # "gradient", "score" or "ensemble"
    norm: str
    eps: float
    robust_accuracy: float
    stages: Mapping[str, int] | None = None  # ensemble only: examples each stage fooled first


def masking_warnings(rows: Sequence[MaskingInput], examples: int, *, gap: float = MASKING_GAP,
                     min_examples: int = MIN_EXAMPLES) -> list[str]:
    """Human-readable warnings (empty when the attacks agree)."""
    if examples <= 0:
        return []
    # Compared in whole examples (accuracies are k / examples), so float rounding cannot decide.
    need = max(min_examples, math.ceil(gap * examples - 1e-9))

    def count(fraction: float) -> int:
        return round(fraction * examples)

    out: list[str] = []
    for row in rows:
        if row.access != "ensemble" or not row.stages:
            continue
        by_score = int(row.stages.get("square", 0))
        if by_score >= need:
            out.append(
                f"{row.attack} at eps {row.eps:g}: the score-based Square stage fooled {by_score} examples "
                f"({by_score / examples:.1%}) on which every gradient attack had failed - a sign of gradient "
                "masking; gradient attacks overstate this model's robustness, trust the ensemble figure")
    keys = sorted({(r.norm, r.eps) for r in rows})
    for norm, eps in keys:
        same = [r for r in rows if (r.norm, r.eps) == (norm, eps)]
        grads = [r for r in same if r.access == "gradient"]
        scores = [r for r in same if r.access == "score"]
        if not grads or not scores:
            continue
        g = max(grads, key=lambda r: r.robust_accuracy)
        s = min(scores, key=lambda r: r.robust_accuracy)
        if count(g.robust_accuracy) - count(s.robust_accuracy) >= need:
            out.append(
                f"at eps {eps:g} ({norm}) {g.attack} reports {g.robust_accuracy:.1%} robust but the score-based "
                f"{s.attack} only {s.robust_accuracy:.1%} ({(g.robust_accuracy - s.robust_accuracy) * 100:.1f} "
                "points lower) - a sign of gradient masking; gradient-attack figures are not robustness here")
    return out
