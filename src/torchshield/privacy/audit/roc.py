"""ROC curves, TPR at low FPR, and the empirical epsilon lower bound a membership attack proves.

Why a lower bound. If training is (epsilon, delta)-DP, every membership test satisfies
``TPR <= e^eps * FPR + delta`` (and the same with the roles of errors swapped). An attack that
does better at some threshold proves the claim false. We use Clopper-Pearson bounds at 95%
(lower for TPR, upper for FPR; Jagielski et al. 2020), so a lucky threshold on a small audit
set does not accuse a correct implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AttackResult", "empirical_epsilon", "roc", "summarise"]


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


def empirical_epsilon(fpr: np.ndarray, tpr: np.ndarray, n_members: int, n_nonmembers: int, *,
                      delta: float = 0.0, confidence: float = 0.95) -> float:
    """Largest epsilon the attack proves at ``confidence`` over all its thresholds (0 when none)."""
    from scipy.stats import beta

    alpha = (1 - confidence) / 2
    tp = np.round(np.asarray(tpr) * n_members)
    fp = np.round(np.asarray(fpr) * n_nonmembers)
    with np.errstate(invalid="ignore"):  # beta.ppf is nan at the edges, which we set by hand
        tp_lo = np.where(tp <= 0, 0.0, beta.ppf(alpha, tp, n_members - tp + 1))
        fp_hi = np.where(fp >= n_nonmembers, 1.0, beta.ppf(1 - alpha, fp + 1, n_nonmembers - fp))
    candidates = [(tp_lo - delta, fp_hi), ((1 - fp_hi) - delta, 1 - tp_lo)]
    best = 0.0
    for num, den in candidates:
        ok = (num > 0) & (den > 0)
        if ok.any():
            best = max(best, float(np.log(num[ok] / den[ok]).max()))
    return best


def summarise(attack: str, members: np.ndarray, nonmembers: np.ndarray, *, delta: float = 0.0,
              seconds: float = 0.0, points: int = 101) -> AttackResult:
    fpr, tpr, auc = roc(members, nonmembers)
    keep = np.unique(np.r_[np.searchsorted(fpr, np.geomspace(1e-4, 1, points)), len(fpr) - 1].clip(0, len(fpr) - 1))
    return AttackResult(attack, auc, _tpr_at(fpr, tpr, 0.01), _tpr_at(fpr, tpr, 0.001),
                        empirical_epsilon(fpr, tpr, len(members), len(nonmembers), delta=delta),
                        [round(float(v), 6) for v in fpr[keep]], [round(float(v), 6) for v in tpr[keep]], seconds)
