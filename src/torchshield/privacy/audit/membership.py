"""Membership-inference audits: how much does a trained model reveal about who was in its data?

Threat model. The attacker has black-box access to the model's outputs (probabilities) and
knows the candidate records and the training recipe; they guess, for each candidate, whether it
was a training member. Three attacks, weakest to strongest:

- ``loss``: Yeom et al. 2018: members have lower loss (score = -loss).
- ``confidence``: the probability of the true class.
- ``lira``: Carlini et al. 2022 (LiRA). Shadow models of the same architecture and recipe are
  trained on random halves of the candidate pool; for each candidate the logit-scaled
  confidence ``log(p / (1 - p))`` under shadows that did (IN) and did not (OUT) see it is fit
  with Gaussians, and the target model's value is scored by the likelihood ratio. With few
  shadows the variances are global (the paper's fixed-variance variant). ``offline`` uses OUT
  shadows only.

A DP model's attacks stay near AUC 0.5 and cannot prove an epsilon above the claimed one; see
``roc.empirical_epsilon`` for the verdict's maths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.privacy.audit.roc import AttackResult, summarise

__all__ = ["AuditReport", "ShadowTrainer", "audit_membership", "logit_confidence"]

ShadowTrainer = Callable[[Tensor, Tensor, int], nn.Module]  # (x, y, seed) -> trained model


@dataclass
class AuditReport:
    attacks: list[AttackResult]
    members: int
    non_members: int
    shadows: int
    claimed_epsilon: float | None
    claimed_delta: float | None
    verdict: str
    consistent: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def strongest(self) -> AttackResult:
        return max(self.attacks, key=lambda a: (a.epsilon_lower_bound, a.advantage))

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "consistent": self.consistent, "members": self.members,
                "non_members": self.non_members, "shadow_models": self.shadows,
                "claimed": {"epsilon": self.claimed_epsilon, "delta": self.claimed_delta},
                "strongest_attack": self.strongest.attack,
                "attacks": [a.to_dict() for a in self.attacks], **self.extra}


@torch.no_grad()
def _probs(model: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    model.eval()
    return torch.cat([torch.softmax(model(x[i:i + batch]).double(), 1) for i in range(0, len(x), batch)])


def logit_confidence(model: nn.Module, x: Tensor, y: Tensor) -> np.ndarray:
    """``log(p_y / (1 - p_y))``, computed stably (LiRA's statistic: near-Gaussian across models)."""
    p = _probs(model, x)
    py = p.gather(1, y.view(-1, 1)).squeeze(1)
    rest = (1 - py).clamp_min(1e-300)
    return (torch.log(py.clamp_min(1e-300)) - torch.log(rest)).numpy()


def _lira(target_phi: np.ndarray, shadow_phi: np.ndarray, inside: np.ndarray, *, offline: bool) -> np.ndarray:
    """Per-example likelihood-ratio scores from shadow statistics ``[K, N]`` and IN masks ``[K, N]``."""
    out_mask, in_mask = ~inside, inside
    mu_out = _masked_mean(shadow_phi, out_mask)
    sd_out = _global_sd(shadow_phi, out_mask, mu_out)
    if offline or not in_mask.any():
        return (target_phi - mu_out) / sd_out  # one-sided: higher than OUT models predict => member
    mu_in = _masked_mean(shadow_phi, in_mask)
    sd_in = _global_sd(shadow_phi, in_mask, mu_in)
    from scipy.stats import norm

    return norm.logpdf(target_phi, mu_in, sd_in) - norm.logpdf(target_phi, mu_out, sd_out)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = mask.sum(0)
    overall = values[mask].mean() if mask.any() else 0.0
    sums = np.where(mask, values, 0.0).sum(0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def _global_sd(values: np.ndarray, mask: np.ndarray, mu: np.ndarray) -> float:
    resid = (values - mu)[mask]
    return float(max(resid.std(), 1e-3)) if resid.size > 1 else 1.0


def audit_membership(model: nn.Module, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor], *,
                     train_shadow: ShadowTrainer | None = None, shadows: int = 4, offline: bool = False,
                     claimed_epsilon: float | None = None, claimed_delta: float | None = None, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> AuditReport:
    """Run the loss, confidence and (with ``train_shadow``) LiRA attacks and give a verdict."""
    (xm, ym), (xn, yn) = members, non_members
    if len(ym) < 10 or len(yn) < 10:
        raise InputError("membership audit needs at least 10 members and 10 non-members")
    delta = claimed_delta or 0.0
    attacks: list[AttackResult] = []
    # Bonferroni over the attacks: the strongest one's bound then holds at 95% (see audit.roc)
    confidence = 1 - 0.05 / (3 if train_shadow is not None and shadows > 0 else 2)
    t = time.perf_counter()
    x, y = torch.cat([xm, xn]), torch.cat([ym, yn])
    n_m = len(ym)
    p = _probs(model, x)
    py = p.gather(1, y.view(-1, 1)).squeeze(1).numpy()
    loss = -np.log(np.clip(py, 1e-300, None))
    attacks.append(summarise("loss", -loss[:n_m], -loss[n_m:], delta=delta, seconds=time.perf_counter() - t,
                             confidence=confidence, seed=seed))
    attacks.append(summarise("confidence", py[:n_m], py[n_m:], delta=delta, seconds=time.perf_counter() - t,
                             confidence=confidence, seed=seed + 1))
    if train_shadow is not None and shadows > 0:
        t = time.perf_counter()
        rng = np.random.default_rng(seed)
        inside = rng.random((shadows, len(y))) < 0.5
        phis = []
        for k in range(shadows):
            idx = torch.from_numpy(np.nonzero(inside[k])[0])
            shadow = train_shadow(x[idx], y[idx], seed + 1 + k)
            phis.append(logit_confidence(shadow, x, y))
            if progress:
                progress(1)
        target_phi = logit_confidence(model, x, y)
        scores = _lira(target_phi, np.stack(phis), inside, offline=offline)
        name = "lira-offline" if offline else "lira"
        attacks.append(summarise(name, scores[:n_m], scores[n_m:], delta=delta, seconds=time.perf_counter() - t,
                                 confidence=confidence, seed=seed + 2))
    report = AuditReport(attacks, n_m, len(yn), shadows if train_shadow else 0, claimed_epsilon, claimed_delta,
                         "", True)
    report.verdict, report.consistent = _verdict(report)
    return report


def _verdict(report: AuditReport) -> tuple[str, bool]:
    best = report.strongest
    lb = best.epsilon_lower_bound
    facts = (f"strongest attack {best.attack}: AUC {best.auc:.3f}, TPR {best.tpr_at_1pct_fpr:.1%} at 1% FPR, "
             f"proves epsilon >= {lb:.2f} (95% confidence, corrected for the thresholds and attacks tried)")
    if report.claimed_epsilon is None:
        level = "high" if best.advantage > 0.15 else "moderate" if best.advantage > 0.05 else "low"
        return f"no privacy claim; {level} measured leakage: {facts}", True
    if lb > report.claimed_epsilon:
        return (f"INCONSISTENT with claimed epsilon {report.claimed_epsilon:g}: {facts}; the training or its "
                "accounting is wrong"), False
    return f"consistent with claimed epsilon {report.claimed_epsilon:g}: {facts}", True
