"""ROC curves, TPR at low FPR, and the empirical epsilon lower bound a membership attack proves.

Why a lower bound. If training is (epsilon, delta)-DP, every membership test satisfies
``TPR <= e^eps * FPR + delta`` (and the same with the roles of errors swapped). An attack that
does better at some threshold proves the claim false. We use Clopper-Pearson bounds (lower for
TPR, upper for FPR; Jagielski et al. 2020), so a lucky threshold on a small audit set does not
accuse a correct implementation.

Why held-out thresholds. A 95% bound at *one* threshold is not a 95% bound for the *best of*
hundreds of thresholds and several attacks: taking the maximum made the "95%" bound positive in
6.7% of no-leak audits. So ``summarise`` picks the threshold and the direction on one random half
of the audit set and states the bound on the other half (one test), and ``audit_membership``
asks each of its ``A`` attacks for confidence ``1 - 0.05/A`` (Bonferroni), so the strongest
attack's bound holds at 95% overall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AttackResult", "empirical_epsilon", "heldout_epsilon", "roc", "summarise"]


@dataclass
class AttackResult:
    attack: str
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    epsilon_lower_bound: float
    roc_fpr: list[float] = field(default_factory=list)
    roc_tpr: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def advantage(self) -> float:
        """Distance of the AUC from chance, in either direction."""
        return abs(self.auc - 0.5)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "auc": self.auc, "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
                "tpr_at_0.1pct_fpr": self.tpr_at_01pct_fpr, "epsilon_lower_bound": self.epsilon_lower_bound,
                "seconds": round(self.seconds, 3), "roc": {"fpr": self.roc_fpr, "tpr": self.roc_tpr}}


def roc(scores_members: np.ndarray, scores_nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """FPR and TPR over all thresholds (higher score = "member") and the AUC (ties count half)."""
    s = np.concatenate([scores_members, scores_nonmembers])
    labels = np.concatenate([np.ones(len(scores_members)), np.zeros(len(scores_nonmembers))])
    order = np.argsort(-s, kind="mergesort")
    s, labels = s[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(labels)[distinct]
    fp = (distinct + 1) - tp
    tpr = np.r_[0.0, tp / max(len(scores_members), 1)]
    fpr = np.r_[0.0, fp / max(len(scores_nonmembers), 1)]
    auc = float(np.trapezoid(tpr, fpr))
    return fpr, tpr, auc


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, limit: float) -> float:
    ok = fpr <= limit
    return float(tpr[ok].max()) if ok.any() else 0.0


def _per_threshold(tp: np.ndarray, fp: np.ndarray, n_members: int, n_nonmembers: int, delta: float,
                   confidence: float) -> np.ndarray:
    """``[2, T]``: the epsilon each threshold proves in each direction (0 where none)."""
    from scipy.stats import beta

    alpha = (1 - confidence) / 2
    tp, fp = np.asarray(tp, dtype=float), np.asarray(fp, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):  # beta.ppf is nan at the edges, set by hand
        tp_lo = np.where(tp <= 0, 0.0, beta.ppf(alpha, tp, n_members - tp + 1))
        fp_hi = np.where(fp >= n_nonmembers, 1.0, beta.ppf(1 - alpha, fp + 1, n_nonmembers - fp))
        out = np.zeros((2, len(tp)))
        for i, (num, den) in enumerate([(tp_lo - delta, fp_hi), ((1 - fp_hi) - delta, 1 - tp_lo)]):
            ok = (num > 0) & (den > 0)
            out[i, ok] = np.maximum(np.log(num[ok] / den[ok]), 0.0)
    return out


def empirical_epsilon(fpr: np.ndarray, tpr: np.ndarray, n_members: int, n_nonmembers: int, *,
                      delta: float = 0.0, confidence: float = 0.95) -> float:
    """Largest epsilon over all thresholds, each at ``confidence``: NOT a ``confidence`` bound for
    the maximum (see the module docstring); kept as a descriptive figure. Use :func:`heldout_epsilon`."""
    tp = np.round(np.asarray(tpr) * n_members)
    fp = np.round(np.asarray(fpr) * n_nonmembers)
    return float(_per_threshold(tp, fp, n_members, n_nonmembers, delta, confidence).max(initial=0.0))


def heldout_epsilon(members: np.ndarray, nonmembers: np.ndarray, *, delta: float = 0.0, confidence: float = 0.95,
                    seed: int = 0) -> float:
    """A ``confidence`` lower bound on epsilon: threshold and direction chosen on one half, tested on the other."""
    members, nonmembers = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    rng = np.random.default_rng(seed)
    pm, pn = rng.permutation(len(members)), rng.permutation(len(nonmembers))
    sel_m, test_m = members[pm[: len(pm) // 2]], members[pm[len(pm) // 2:]]
    sel_n, test_n = nonmembers[pn[: len(pn) // 2]], nonmembers[pn[len(pn) // 2:]]
    if min(len(sel_m), len(sel_n), len(test_m), len(test_n)) == 0:
        return 0.0
    thresholds = np.unique(np.concatenate([sel_m, sel_n]))  # "member" iff score >= threshold
    tp = len(sel_m) - np.searchsorted(np.sort(sel_m), thresholds, side="left")
    fp = len(sel_n) - np.searchsorted(np.sort(sel_n), thresholds, side="left")
    scores = _per_threshold(tp, fp, len(sel_m), len(sel_n), delta, confidence)
    direction, best = np.unravel_index(int(np.argmax(scores)), scores.shape)
    if scores[direction, best] <= 0:
        return 0.0  # nothing to test: the selection half shows no leakage
    # midway to the next lower score seen: the selection half does not say where in that gap to cut
    t = thresholds[best] if best == 0 else (thresholds[best] + thresholds[best - 1]) / 2
    tp_t, fp_t = np.array([(test_m >= t).sum()]), np.array([(test_n >= t).sum()])
    return float(_per_threshold(tp_t, fp_t, len(test_m), len(test_n), delta, confidence)[direction, 0])


def summarise(attack: str, members: np.ndarray, nonmembers: np.ndarray, *, delta: float = 0.0,
              seconds: float = 0.0, points: int = 101, confidence: float = 0.95, seed: int = 0) -> AttackResult:
    """ROC figures over the whole audit set; the epsilon bound from :func:`heldout_epsilon`."""
    fpr, tpr, auc = roc(members, nonmembers)
    keep = np.unique(np.r_[np.searchsorted(fpr, np.geomspace(1e-4, 1, points)), len(fpr) - 1].clip(0, len(fpr) - 1))
    return AttackResult(attack, auc, _tpr_at(fpr, tpr, 0.01), _tpr_at(fpr, tpr, 0.001),
                        heldout_epsilon(members, nonmembers, delta=delta, confidence=confidence, seed=seed),
                        [round(float(v), 6) for v in fpr[keep]], [round(float(v), 6) for v in tpr[keep]], seconds)
