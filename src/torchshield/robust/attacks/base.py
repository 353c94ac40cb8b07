"""The attack contract: a template method that makes every attack safe to call.

Threat model: an attacker who may change each input by at most ``eps`` in a given norm (white-box
attacks read the model's gradients; black-box ones only its scores) and must stay inside the
valid input range. :meth:`Attack.__call__` enforces the parts every attack shares, so a new
attack only writes :meth:`Attack._perturb`:

* inputs, labels, epsilon and the model's output width are validated (exit 2 on bad input);
* the model runs in eval mode during the attack and gets its previous mode back afterwards;
* gradients are taken with ``torch.autograd.grad`` on the input only, so model parameters never
  receive a ``.grad`` and are never changed;
* randomness comes from a generator seeded by ``seed`` and drawn on the CPU, so a seed gives the
  same adversarial examples on every device;
* the result is projected once more so the budget holds exactly (no ulp overshoot).
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.balls import BALLS, NormBall
from torchshield.robust.validation import (
    check_bounds,
    check_eps,
    check_inputs,
    check_labels,
    check_logits,
    dtype_bounds,
)

__all__ = ["Attack"]


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy (the default loss of the gradient attacks)."""
    return F.cross_entropy(logits, y, reduction="none")


class Attack(ABC):
    """Base class of every attack; subclasses set ``name``/``norm`` and implement ``_perturb``.

    ``eps=None`` is allowed only for minimum-norm attacks (``requires_eps = False``), which then
    return their smallest adversarial example without a budget.
    """

    name: ClassVar[str]
    norm: ClassVar[str] = "linf"
    requires_eps: ClassVar[bool] = True
    # How the attack reaches the model: "gradient" (white box), "score" (outputs only) or
    # "ensemble" (several); masking checks compare gradient and score attacks.
    access: ClassVar[str] = "gradient"

    def __init__(self, model: nn.Module, *, eps: float | None, bounds: tuple[float, float] = (0.0, 1.0),
                 num_classes: int | None = None, seed: int | None = None) -> None:
        self.model = model
        self.bounds = check_bounds(bounds)
        if eps is None and self.requires_eps:
            raise InputError(f"attack {self.name!r} needs an epsilon (its perturbation budget)")
        self.eps = None if eps is None else check_eps(eps, norm=self.norm, bounds=self.bounds)
        self.num_classes = num_classes
        self.seed = seed
        self._max_label = 0

    @property
    def ball(self) -> NormBall:
        return BALLS[self.norm]

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial examples for ``(x, y)``: same shape, within budget and bounds."""
        check_inputs(x, self.bounds)
        y = check_labels(y, x.shape[0], num_classes=self.num_classes).to(x.device)
        if self.eps is not None and self.norm == "l2":
            check_eps(self.eps, norm="l2", bounds=self.bounds, dim=x[0].numel())
        self._max_label = int(y.max())
        x = x.detach()
        if self.eps == 0:
            # No budget, no change: the clean input itself, bit for bit (a projection would be
            # exact too, but an attack must not even spend queries on an empty ball).
            return x.clone()
        generator = torch.Generator().manual_seed(self.seed if self.seed is not None else secrets.randbits(62))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                x_adv = self._perturb(x, y, generator).detach()
        finally:
            self.model.train(was_training)
        lo, hi = dtype_bounds(self.bounds, x_adv.dtype)
        if self.eps is None:
            return x_adv.clamp_(lo, hi)
        # enforce() ends with the box, whose edges x's dtype holds exactly: every returned value
        # lies in the declared [lo, hi], compared in any precision.
        return self.ball.enforce(x_adv, x, self.eps, lo, hi)

    @abstractmethod
    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        """Attack one batch; ``x`` is detached and valid, ``y`` int64 on ``x.device``."""

    # Building blocks for subclasses -------------------------------------------------------

    def _logits(self, x: Tensor) -> Tensor:
        """Forward pass with the output-width check (cheap: shape comparisons only)."""
        out = self.model(x)
        self.num_classes = check_logits(out, x.shape[0], num_classes=self.num_classes,
                                        max_label=self._max_label)
        return out

    def _loss_grad(self, x_adv: Tensor, y: Tensor,
                   loss_fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Per-example ``loss_fn(logits, y)`` at ``x_adv``, its gradient w.r.t. the input only, and the logits."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self._logits(x_adv)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad, logits.detach()

    def _ce_grad(self, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-example cross-entropy at ``x_adv``, its gradient w.r.t. the input only, and the logits."""
        return self._loss_grad(x_adv, y, ce_loss)

    @staticmethod
    def _margin(logits: Tensor, y: Tensor) -> Tensor:
        """``logit[y] - max other logit``: negative exactly when the example is misclassified."""
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return true - other
