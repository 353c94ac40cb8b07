"""APGD-CE (Croce & Hein 2020): step-size-free PGD with momentum.

Why it is here: fixed-step PGD can overestimate robustness when its step size is badly chosen.
APGD starts with a large step (2 eps), halves it per example at checkpoints where progress
stalled, and restarts from the best point, which is the first stage of AutoAttack. This is a
reimplementation of the published algorithm (not a port of its code) so it shares our
validation, bounds, eval-mode and no-parameter-gradient guarantees.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.base import Attack

__all__ = ["APGD", "APGDL2"]

_RHO = 0.75  # a checkpoint halves the step when fewer than 75% of steps increased the loss
_MOMENTUM = 0.75


def _checkpoints(steps: int) -> list[int]:
    """Iterations after which the step size is reconsidered: p0=0, p1=0.22, shrinking gaps >= 0.06."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({max(1, int(round(q * steps))) for q in p[1:] if q < 1})


class APGD(Attack):
    """APGD-CE, Linf: adaptive step size with momentum (AutoAttack's first stage)."""

    name = "apgd-ce"
    norm = "linf"

    def __init__(self, model: nn.Module, *, eps: float, steps: int = 100, restarts: int = 1, **common) -> None:
        super().__init__(model, eps=eps, **common)
        if steps < 1 or restarts < 1:
            raise InputError(f"{self.name}: steps and restarts must be >= 1, got {steps} and {restarts}")
        self.steps = int(steps)
        self.restarts = int(restarts)

    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        best = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.restarts):
            adv, fooled = self._run(x[todo], y[todo], generator)
            best[todo] = adv
            todo = todo[~fooled]
            if todo.numel() == 0:
                break
        return best

    def _run(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One APGD run; returns per example the first misclassified point found, else the
        highest-loss point, and whether the example was fooled."""
        lo, hi = self.bounds
        n = x.shape[0]
        eta = torch.full((n,) + (1,) * (x.ndim - 1), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        project = self.ball.projector(x, self.eps, lo, hi)
        x_adv = project(self.ball.sample(x, self.eps, generator))
        loss, grad, logits = self._ce_grad(x_adv, y)
        fooled = logits.argmax(dim=1) != y
        x_out = x_adv.clone()
        best_loss, grad_best = loss.clone(), grad.clone()
        prev_loss, loss_at_check = loss.clone(), loss.clone()
        increases = torch.zeros(n, device=x.device)
        reduced_at_check = torch.zeros(n, dtype=torch.bool, device=x.device)
        x_prev, x_best = x_adv.clone(), x_adv.clone()
        checkpoints, last_check = set(_checkpoints(self.steps)), 0
        for i in range(self.steps):
            with torch.no_grad():
                z = project(x_adv + eta * self.ball.direction(grad))
                a = _MOMENTUM if i > 0 else 1.0
                x_prev, x_adv = x_adv, project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev))
            loss, grad, logits = self._ce_grad(x_adv, y)
            with torch.no_grad():
                wrong = (logits.argmax(dim=1) != y) & ~fooled
                x_out[wrong] = x_adv[wrong]
                fooled |= wrong
                increases += (loss > prev_loss).to(increases.dtype)
                prev_loss = loss
                improved = loss > best_loss
                best_loss = torch.where(improved, loss, best_loss)
                x_best[improved] = x_adv[improved]
                grad_best[improved] = grad[improved]
                if i + 1 in checkpoints:
                    stalled = increases < _RHO * (i + 1 - last_check)
                    reduce = stalled | (~reduced_at_check & (loss_at_check >= best_loss))
                    reduced_at_check, loss_at_check = reduce, best_loss.clone()
                    eta[reduce] /= 2
                    x_adv[reduce] = x_best[reduce]
                    grad[reduce] = grad_best[reduce]
                    increases.zero_()
                    last_check = i + 1
        return torch.where(fooled.view(eta.shape), x_out, x_best), fooled


class APGDL2(APGD):
    """APGD-CE in the L2 ball."""

    name = "apgd-ce-l2"
    norm = "l2"
