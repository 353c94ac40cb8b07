"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): predictions with a certified L2 radius.

The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` is provably constant
within radius ``sigma * Phi^-1(p_A)`` of ``x`` when the top class has probability ``p_A >= 1/2``.
We never know ``p_A``; CERTIFY estimates it by Monte Carlo and uses the one-sided Clopper-Pearson
lower bound, so each certificate holds with probability at least ``1 - alpha`` over the noise.
Both procedures may ABSTAIN (return :data:`ABSTAIN`) rather than give an unsupported answer.

Threat model: the certificate covers any L2 perturbation smaller than the radius, by an attacker
who knows the model but not the noise. The noise therefore comes from a generator seeded from
the OS CSPRNG by default; ``seed`` exists for reproducible tests and must not be used in serving.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from torchshield.errors import InputError

__all__ = ["ABSTAIN", "Certificate", "SmoothedClassifier", "clopper_pearson_lower"]

ABSTAIN = -1


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) lower confidence bound on a binomial proportion (exact, conservative)."""
    from scipy.stats import beta

    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for one input: a class (or ABSTAIN) and the certified L2 radius."""

    prediction: int
    radius: float
    p_lower: float
    count: int


class SmoothedClassifier:
    """Wraps a base classifier ``f`` (trained with Gaussian noise of the same sigma, ideally)."""

    def __init__(self, model: nn.Module, *, num_classes: int, sigma: float, batch_size: int = 1000,
                 seed: int | None = None) -> None:
        if not (sigma > 0 and math.isfinite(sigma)):
            raise InputError(f"sigma must be a finite number > 0, got {sigma}")
        if num_classes < 2:
            raise InputError(f"num_classes must be >= 2, got {num_classes}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            # 0 would loop for ever drawing no noise
            raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.model, self.num_classes, self.sigma, self.batch_size = model, num_classes, float(sigma), batch_size
        self._generator = torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(62))

    @torch.no_grad()
    def counts(self, x: Tensor, n: int) -> Tensor:
        """Class counts of ``f(x + noise)`` over ``n`` noise draws, for one input ``x`` (no batch dim)."""
        was_training = self.model.training
        self.model.eval()
        try:
            counts = torch.zeros(self.num_classes, dtype=torch.long)
            left = n
            while left > 0:
                b = min(self.batch_size, left)
                noise = torch.randn((b, *x.shape), generator=self._generator, dtype=x.dtype).to(x.device)
                logits = self.model(x.unsqueeze(0) + self.sigma * noise)
                if logits.ndim != 2 or logits.shape[1] != self.num_classes:
                    raise InputError(f"the model must return (batch, {self.num_classes}) logits, "
                                     f"got {tuple(logits.shape)}")
                counts += torch.bincount(logits.argmax(dim=1).cpu(), minlength=self.num_classes)
                left -= b
            return counts
        finally:
            self.model.train(was_training)

    def predict(self, x: Tensor, *, n: int = 1000, alpha: float = 0.001) -> int:
        """PREDICT: the top class if a two-sided binomial test separates it from the runner-up at
        level ``alpha``, else ABSTAIN (so a wrong answer happens with probability <= alpha)."""
        from scipy.stats import binomtest

        _check(n=n, alpha=alpha)
        top2 = self.counts(x, n).topk(2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        if binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    def certify(self, x: Tensor, *, n0: int = 100, n: int = 1000, alpha: float = 0.001) -> Certificate:
        """CERTIFY: guess the top class from ``n0`` draws, bound its probability from ``n`` fresh
        draws; radius ``sigma * Phi^-1(p_lower)`` if ``p_lower > 1/2``, else ABSTAIN."""
        from scipy.stats import norm

        _check(n=n, alpha=alpha, n0=n0)
        guess = int(self.counts(x, n0).argmax())
        count = int(self.counts(x, n)[guess])
        p_lower = clopper_pearson_lower(count, n, alpha)
        if p_lower <= 0.5:
            return Certificate(ABSTAIN, 0.0, p_lower, count)
        return Certificate(guess, self.sigma * float(norm.ppf(p_lower)), p_lower, count)


def _check(*, n: int, alpha: float, n0: int = 1) -> None:
    if n < 1 or n0 < 1:
        raise InputError(f"noise sample counts must be >= 1, got n={n}, n0={n0}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
