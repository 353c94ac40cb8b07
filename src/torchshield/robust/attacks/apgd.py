"""APGD (Croce & Hein 2020): step-size-free PGD with momentum, with the CE, DLR, targeted-DLR
and CW-margin losses.

Why it is here: fixed-step PGD can overestimate robustness when its step size is badly chosen.
APGD starts with a large step (2 eps), halves it per example at checkpoints where progress
stalled, and restarts from the best point; it is the first stage of AutoAttack. The scale-free
DLR loss (and its targeted form, APGD-T, the second stage) is not fooled by rescaled logits, a
common way models hide their gradients. This is a reimplementation of the published algorithm
(checked against the authors' and torchattacks' code, not a port) so it shares our validation,
bounds, eval-mode and no-parameter-gradient guarantees.

Faithful to the paper and reference code: checkpoints at p0 = 0, p1 = 0.22 and
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) of the iterations; at a checkpoint the step of an
example is halved when at most rho = 0.75 of the steps since the last checkpoint increased its
loss, or when its best loss did not improve since the last checkpoint and its step was not
halved there; a halved example restarts from its best point. Momentum 0.75 (none on the first
step); first step 2 eps; Linf sign steps, L2 normalised-gradient steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.base import Attack, ce_loss

__all__ = ["APGD", "APGDL2", "APGDTargeted", "APGDTargetedL2", "LOSSES", "cw_loss", "dlr_loss",
           "targeted_dlr_loss", "targeted_margin"]

_RHO = 0.75  # a checkpoint halves the step when at most 75% of steps increased the loss
_MOMENTUM = 0.75
_TINY = 1e-12

LossFn = Callable[[Tensor, Tensor], Tensor]


def _checkpoints(steps: int) -> list[int]:
    """Iterations after which the step size is reconsidered: p0=0, p1=0.22, shrinking gaps >= 0.06."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({max(1, int(round(q * steps))) for q in p[1:] if q < 1})


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio: ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)`` (needs >= 3 classes).

    Invariant to shifting and rescaling the logits, so a saturated or scaled-up softmax does not
    flatten it the way it flattens cross-entropy."""
    ordered, _ = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = logits.argmax(dim=1) == y
    other = torch.where(top_is_y, ordered[:, -2], ordered[:, -1])
    return -(true - other) / (ordered[:, -1] - ordered[:, -3] + _TINY)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs >= 4 classes)."""
    ordered, _ = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + _TINY)


def targeted_margin(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """``z_t - z_y``: the targeted margin (positive once the target outscores the true class)."""
    return logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)


def cw_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner's margin: ``max_{i!=y} z_i - z_y`` (positive exactly when misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "dlr": dlr_loss, "cw": cw_loss}


class APGD(Attack):
    """APGD-CE, Linf: adaptive step size with momentum (loss ce; dlr or cw on request)."""

    name = "apgd-ce"
    norm = "linf"

    def __init__(self, model: nn.Module, *, eps: float, steps: int = 100, restarts: int = 1,
                 loss: str = "ce", **common) -> None:
        super().__init__(model, eps=eps, **common)
        if steps < 1 or restarts < 1:
            raise InputError(f"{self.name}: steps and restarts must be >= 1, got {steps} and {restarts}")
        if loss not in LOSSES:
            raise InputError(f"{self.name}: unknown loss {loss!r}", hint=f"choose one of: {', '.join(LOSSES)}")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.loss = loss

    def _loss_fn(self, logits: Tensor) -> LossFn:
        if self.loss == "dlr" and logits.shape[1] < 3:
            return cw_loss  # DLR needs a third logit; with two classes CW's margin is the same direction
        return LOSSES[self.loss]

    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        best = x.clone()
        with torch.no_grad():
            logits = self._logits(x)
        todo = (logits.argmax(dim=1) == y).nonzero().squeeze(1)  # already wrong: nothing to do
        loss_fn = self._loss_fn(logits)
        for _ in range(self.restarts):
            if todo.numel() == 0:
                break
            adv, fooled = self._run(x[todo], y[todo], generator, loss_fn)
            best[todo] = adv
            todo = todo[~fooled]
        return best

    def _run(self, x: Tensor, y: Tensor, generator: torch.Generator, loss_fn: LossFn) -> tuple[Tensor, Tensor]:
        """One APGD run; returns per example the first misclassified point found, else the
        highest-loss point, and whether the example was fooled."""
        lo, hi = self.bounds
        n = x.shape[0]
        eta = torch.full((n,) + (1,) * (x.ndim - 1), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        project = self.ball.projector(x, self.eps, lo, hi)
        x_adv = project(self.ball.boundary(x, self.eps, generator))  # as the reference code starts
        loss, grad, logits = self._loss_grad(x_adv, y, loss_fn)
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
            loss, grad, logits = self._loss_grad(x_adv, y, loss_fn)
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
                    stalled = increases <= _RHO * (i + 1 - last_check)
                    reduce = stalled | (~reduced_at_check & (loss_at_check >= best_loss))
                    reduced_at_check, loss_at_check = reduce, best_loss.clone()
                    eta[reduce] /= 2
                    x_adv[reduce] = x_best[reduce]
                    grad[reduce] = grad_best[reduce]
                    increases.zero_()
                    last_check = i + 1
        return torch.where(fooled.view(eta.shape), x_out, x_best), fooled


class APGDL2(APGD):
    """APGD-CE in the L2 ball (loss ce; dlr or cw on request)."""

    name = "apgd-ce-l2"
    norm = "l2"


class APGDTargeted(APGD):
    """APGD-T, Linf: targeted DLR loss, towards the most likely wrong classes in turn.

    AutoAttack's second stage: ``targets`` runs, the k-th aimed at the (k+1)-th most likely class
    at the clean input; an example is fooled if any run fools it."""

    name = "apgd-t"
    norm = "linf"

    def __init__(self, model: nn.Module, *, eps: float, steps: int = 100, restarts: int = 1, targets: int = 9,
                 **common) -> None:
        super().__init__(model, eps=eps, steps=steps, restarts=restarts, loss="dlr", **common)
        if targets < 1:
            raise InputError(f"{self.name}: targets must be >= 1, got {targets}")
        self.targets = int(targets)

    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        best = x.clone()
        with torch.no_grad():
            clean_logits = self._logits(x)
        todo = (clean_logits.argmax(dim=1) == y).nonzero().squeeze(1)
        ranked = clean_logits.argsort(dim=1, descending=True)
        classes = clean_logits.shape[1]
        for k in range(1, min(self.targets, classes - 1) + 1):
            for _ in range(self.restarts):
                if todo.numel() == 0:
                    return best
                target = ranked[todo, k]  # the (k+1)-th most likely class at the clean input
                if classes >= 4:
                    def loss_fn(logits: Tensor, yy: Tensor, t: Tensor = target) -> Tensor:
                        return targeted_dlr_loss(logits, yy, t)
                else:  # too few logits for DLR's scale: the plain targeted margin z_t - z_y
                    def loss_fn(logits: Tensor, yy: Tensor, t: Tensor = target) -> Tensor:
                        return targeted_margin(logits, yy, t)
                adv, fooled = self._run(x[todo], y[todo], generator, loss_fn)
                best[todo] = adv
                todo = todo[~fooled]
        return best


class APGDTargetedL2(APGDTargeted):
    """APGD-T in the L2 ball."""

    name = "apgd-t-l2"
    norm = "l2"
