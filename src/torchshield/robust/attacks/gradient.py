"""FGSM and PGD (Madry et al. 2018) in the Linf and L2 norms.

The inner loop is kept to exactly what the cost floor needs: one forward, one input-gradient
backward (``torch.autograd.grad`` on the input, never ``loss.backward()``, which would also
compute parameter gradients and cost ~1.3x), a sign or normalised step, and a projection onto
the precomputed intersection of the ball and the input box.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.base import Attack

__all__ = ["FGSM", "PGD", "PGDL2"]


class PGD(Attack):
    """Projected gradient descent on the cross-entropy, Linf ball.

    ``alpha`` defaults to ``2.5 * eps / steps`` (Madry's ratio). With ``restarts > 1`` each
    restart attacks only the examples no earlier restart has fooled, and an example keeps the
    first adversarial example found for it.
    """

    name = "pgd"
    norm = "linf"

    def __init__(self, model: nn.Module, *, eps: float, steps: int = 40, alpha: float | None = None,
                 random_start: bool = True, restarts: int = 1, **common) -> None:
        super().__init__(model, eps=eps, **common)
        if steps < 1 or restarts < 1:
            raise InputError(f"{self.name}: steps and restarts must be >= 1, got {steps} and {restarts}")
        if alpha is not None and not alpha > 0:
            raise InputError(f"{self.name}: step size alpha must be > 0, got {alpha}")
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / self.steps
        self.random_start = random_start
        self.restarts = int(restarts)

    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        if self.restarts == 1:
            return self._run(x, y, generator)
        best = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.restarts):
            adv = self._run(x[todo], y[todo], generator)
            best[todo] = adv
            with torch.no_grad():
                fooled = self._logits(adv).argmax(dim=1) != y[todo]
            todo = todo[~fooled]
            if todo.numel() == 0:
                break
        return best

    def _run(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        """The textbook loop, plus per-example memory: an example whose last iterate is not
        adversarial but an earlier one was gets that earlier point (fixed-step PGD oscillates
        across the decision boundary; returning only the last iterate under-reports it)."""
        lo, hi = self.bounds
        project = self.ball.projector(x, self.eps, lo, hi)
        x_adv = project(self.ball.sample(x, self.eps, generator)) if self.random_start else x.clone()
        found: Tensor | None = None  # last adversarial point seen per example (x where none yet)
        seen = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            _, grad, logits = self._ce_grad(x_adv, y)
            with torch.no_grad():
                wrong = logits.argmax(dim=1) != y
                if bool(wrong.any()):
                    found = x_adv.clone() if found is None else torch.where(_rows(wrong, x), x_adv, found)
                    seen |= wrong
                x_adv = project(x_adv.add_(self.ball.direction(grad), alpha=self.alpha))
        if found is None or self.steps == 1:
            return x_adv
        with torch.no_grad():
            lost = seen & (self._logits(x_adv).argmax(dim=1) == y)
        return torch.where(_rows(lost, x), found, x_adv)


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


class PGDL2(PGD):
    """PGD in the L2 ball: normalised-gradient steps, projection by rescaling."""

    name = "pgd-l2"
    norm = "l2"


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps from the clean input."""

    name = "fgsm"
    norm = "linf"

    def __init__(self, model: nn.Module, *, eps: float, **common) -> None:
        super().__init__(model, eps=eps, steps=1, alpha=eps if eps and eps > 0 else None,
                         random_start=False, restarts=1, **common)
