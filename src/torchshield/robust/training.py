"""Training losses that harden a model: PGD-AT, TRADES, fast FGSM-AT and Gaussian noise.

The shared training loop (``torchshield.nn.loop.fit``) calls ``loss_fn(model, x, y)`` once per
batch; :func:`make_loss` turns the ``adversarial:`` or ``augment:`` section of the training config
into such a function. Each returns per-example losses (shape ``[B]``), as the loop prefers and
DP-SGD requires. Two guarantees every loss here keeps:

* the inner attack runs with the model in **eval mode** (restored to train mode before the
  training forward), so BatchNorm running statistics are not updated once per attack step by
  throw-away batches, and dropout does not randomise the attack's gradients;
* the inner attack differentiates with respect to the **input only** (``torch.autograd.grad``)
  and returns detached examples, so no attack gradient reaches the parameters: the only
  parameter gradients come from the loss this function returns.

References: Madry et al. 2018 (PGD-AT), Zhang et al. 2019 (TRADES), Wong et al. 2020 (fast
adversarial training: FGSM from a uniform random start, step 1.25 eps), Cohen et al. 2019
(Gaussian noise augmentation, the training that randomized smoothing certifies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.balls import BALLS
from torchshield.robust.attacks.gradient import PGD, PGDL2
from torchshield.robust.validation import check_bounds, check_eps

__all__ = ["FastFGSMLoss", "GaussianNoiseLoss", "LossFn", "PGDTrainingLoss", "TradesLoss", "make_loss"]

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


class _EvalMode:
    """Context manager: eval mode inside, the previous mode afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


@dataclass(frozen=True)
class PGDTrainingLoss:
    """Madry's min-max: cross-entropy on PGD examples (random start) found against the current model."""

    eps: float
    steps: int
    alpha: float
    bounds: tuple[float, float]
    norm: str = "linf"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        cls = PGD if self.norm == "linf" else PGDL2
        # Seeded from torch's global generator, so a seeded training run is reproducible.
        seed = int(torch.randint(0, 2**62, (1,)))
        attack = cls(model, eps=self.eps, steps=self.steps, alpha=self.alpha, random_start=True,
                     bounds=self.bounds, seed=seed)
        x_adv = attack(x, y)  # eval mode and input-only gradients are the Attack contract
        return F.cross_entropy(model(x_adv), y, reduction="none")


@dataclass(frozen=True)
class TradesLoss:
    """TRADES: natural cross-entropy + beta * KL(f(x) || f(x')), x' maximising that KL in the ball."""

    eps: float
    steps: int
    alpha: float
    beta: float
    bounds: tuple[float, float]

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        lo, hi = self.bounds
        ball = BALLS["linf"]
        project = ball.projector(x, self.eps, lo, hi)
        with _EvalMode(model), torch.enable_grad():
            with torch.no_grad():
                p_nat = F.softmax(model(x), dim=1)
            # TRADES starts next to x (0.001 * N(0, 1)): the KL's gradient is zero at x itself.
            x_adv = project(x + 0.001 * torch.randn_like(x))
            for _ in range(self.steps):
                x_adv = x_adv.detach().requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_nat, reduction="sum")
                (grad,) = torch.autograd.grad(kl, x_adv)
                x_adv = project(x_adv.detach() + self.alpha * grad.sign())
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv.detach()), dim=1), F.softmax(logits, dim=1),
                          reduction="none").sum(dim=1)
        return F.cross_entropy(logits, y, reduction="none") + self.beta * robust


@dataclass(frozen=True)
class FastFGSMLoss:
    """Wong et al. 2020: one FGSM step of size alpha (1.25 eps) from a uniform random start."""

    eps: float
    alpha: float
    bounds: tuple[float, float]

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        lo, hi = self.bounds
        project = BALLS["linf"].projector(x, self.eps, lo, hi)
        with _EvalMode(model), torch.enable_grad():
            start = project(x + (2 * torch.rand_like(x) - 1) * self.eps).requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y), start)
            x_adv = project(start.detach() + self.alpha * grad.sign())
        return F.cross_entropy(model(x_adv), y, reduction="none")


@dataclass(frozen=True)
class GaussianNoiseLoss:
    """Cross-entropy on x + N(0, sigma^2): the training randomized smoothing needs (not clamped,
    matching the certified smoothed classifier, which adds unclamped noise)."""

    sigma: float

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(model(x + self.sigma * torch.randn_like(x)), y, reduction="none")


_ADV_KEYS = {"method", "eps", "steps", "alpha", "beta", "norm", "random_start"}


def _number(section: dict[str, Any], key: str, default: float | None, *, field: str) -> float:
    value = section.get(key, default)
    if value is None:
        raise InputError(f"{field}.{key} is required")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{field}.{key} must be a number, got {value!r}") from exc


def _steps(section: dict[str, Any], default: int, *, field: str) -> int:
    steps = section.get("steps", default)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"{field}.steps must be a whole number >= 1, got {steps!r}")
    return steps


def make_loss(section: dict[str, Any], *, bounds: tuple[float, float]) -> LossFn:
    """Build the training loss for one config section.

    ``section`` is either the ``adversarial:`` section
    (``{method: pgd|trades|fast, eps, steps, alpha, beta, norm}``) or the ``augment:`` section
    (``{gaussian_noise: sigma}``); ``bounds`` is the dataset's declared input range. Defaults:
    pgd 10 steps of 2.5 eps / steps; trades 10 steps of eps / 4, beta 6; fast alpha 1.25 eps.
    """
    if not isinstance(section, dict):
        raise InputError(f"the training section must be a mapping, got {type(section).__name__}")
    bounds = check_bounds(bounds)
    if "gaussian_noise" in section:
        extra = set(section) - {"gaussian_noise"}
        if extra:
            raise InputError(f"augment: unknown field(s) {', '.join(sorted(extra))}")
        sigma = _number(section, "gaussian_noise", None, field="augment")
        if not sigma > 0:
            raise InputError(f"augment.gaussian_noise must be > 0, got {sigma}")
        return GaussianNoiseLoss(sigma)
    field = "adversarial"
    unknown = set(section) - _ADV_KEYS
    if unknown:
        raise InputError(f"{field}: unknown field(s) {', '.join(sorted(unknown))}",
                         hint=f"known fields: {', '.join(sorted(_ADV_KEYS))}")
    method = str(section.get("method", "pgd")).lower()
    norm = str(section.get("norm", "linf")).lower()
    if norm not in BALLS or (norm != "linf" and method != "pgd"):
        raise InputError(f"{field}.norm {norm!r} is not supported for method {method!r}",
                         hint="linf for every method, l2 for pgd")
    eps = check_eps(_number(section, "eps", None, field=field), norm=norm, bounds=bounds)
    if method == "pgd":
        steps = _steps(section, 10, field=field)
        alpha = _number(section, "alpha", 2.5 * eps / steps, field=field)
        return PGDTrainingLoss(eps, steps, alpha, bounds, norm)
    if method == "trades":
        steps = _steps(section, 10, field=field)
        return TradesLoss(eps, steps, _number(section, "alpha", eps / 4, field=field),
                          _number(section, "beta", 6.0, field=field), bounds)
    if method == "fast":
        return FastFGSMLoss(eps, _number(section, "alpha", 1.25 * eps, field=field), bounds)
    raise InputError(f"{field}.method must be one of pgd, trades, fast; got {method!r}")

