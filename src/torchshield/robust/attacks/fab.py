"""FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack"): the targeted fast adaptive boundary attack, Linf and L2, AutoAttack's third stage.

Why it is here: APGD climbs a loss, so it depends on that loss's gradient having a useful scale;
a model whose logits saturate or whose loss surface is flat around the input can stall it even
when a nearby adversarial example exists. FAB does not follow a loss: at each step it linearises
the decision boundary between the true class and a target class (``z_t - z_y = 0``), projects onto
that hyperplane intersected with the input box, and biases the step towards the clean input, so it
walks to the boundary along the shortest path it can see. Only the direction of the gradient
matters, not its size, which is what catches some masking APGD misses. It is a minimum-norm
attack: an example counts as fooled at budget ``eps`` only when the smallest adversarial example
found is within ``eps`` (else the clean input is returned, as AutoAttack counts it); with
``eps=None`` the smallest one found is returned without a budget.

Faithful to AutoAttack's FAB-T (``fab_base.py``, checked against torchattacks 3.5.1, a
reimplementation, not a port): targets are the 2nd to 10th most likely classes at the clean input
in turn (``targets`` = 9), each run only on the examples no earlier target fooled within eps;
``steps`` = 100 iterations, ``restarts`` = 1 (later restarts start from a random point at half of
eps); per iteration the projections of the current point and of the clean input onto the
linearised boundary, combined with weight ``alpha = min(|d1| / (|d1| + |d2|), alpha_max = 0.1)``
and overshoot ``eta = 1.05``, clamped to the box; whenever the point is misclassified it is kept if
smaller than the best so far and moved back towards the input (``beta = 0.9``, the backward step).
AutoAttack has no final search after the loop, and neither do we. The projection is solved in
closed form for both norms (one sort per example, no bisection loop), for any box ``bounds``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.apgd import targeted_margin
from torchshield.robust.attacks.base import Attack

__all__ = ["FABTargeted", "FABTargetedL2", "boundary_projection"]

_TINY = 1e-12


def boundary_projection(t: Tensor, w: Tensor, b: Tensor, lo: float, hi: float, norm: str) -> Tensor:
    """Per row, the smallest ``d`` (Linf or L2) with ``w . (t + d) = b`` and ``lo <= t + d <= hi``.

    ``t``, ``w``: (n, d); ``b``: (n,). Where the box cannot reach the hyperplane, ``d`` moves every
    coordinate to the box edge that brings ``w . x`` closest to ``b``. Every coordinate moves
    against ``sign(w . t - b) * w``, by ``min(lam * v_i, room_i)`` with ``v_i = 1`` (Linf) or
    ``|w_i|`` (L2) and ``room_i`` the distance to the box edge in that direction; the change of
    ``w . x`` is piecewise linear and increasing in ``lam``, so sorting the points where
    coordinates reach the box gives ``lam`` exactly."""
    side = torch.where((w * t).sum(1) - b >= 0, 1.0, -1.0).to(w.dtype)
    w = w * side[:, None]
    gap = ((w * t).sum(1) - b * side).clamp_min(0)  # how much w.x must decrease
    aw = w.abs()
    room = torch.where(w > 0, t - lo, hi - t).clamp_min(0)
    speed = torch.ones_like(w) if norm == "linf" else aw
    weight = aw * speed
    stop = torch.where(speed > 0, room / speed.clamp_min(_TINY), torch.full_like(room, float("inf")))
    order = stop.argsort(dim=1)
    stop_s = stop.gather(1, order)
    gained = (aw * room).gather(1, order).cumsum(1)  # decrease from the coordinates already at the box
    rest = (weight.sum(1, keepdim=True) - weight.gather(1, order).cumsum(1)).clamp_min(0)
    reached = torch.where(rest > 0, gained + stop_s * rest, gained)  # decrease at each breakpoint
    k = (reached < gap[:, None]).sum(1, keepdim=True)
    gained = torch.cat([torch.zeros_like(gap[:, None]), gained], dim=1).gather(1, k)
    rest = torch.cat([weight.sum(1, keepdim=True), rest], dim=1).gather(1, k)
    lam = ((gap[:, None] - gained) / rest.clamp_min(_TINY)).clamp_min(0)
    lam = torch.where(k == w.shape[1], torch.full_like(lam, float("inf")), lam)  # unreachable: go to the edge
    move = torch.where(speed > 0, torch.minimum(lam * speed, room), torch.zeros_like(room))
    return -w.sign() * move


class FABTargeted(Attack):
    """FAB-T, Linf: targeted fast adaptive boundary attack (minimum norm; eps optional)."""

    name = "fab-t"
    norm = "linf"
    requires_eps = False

    def __init__(self, model: nn.Module, *, eps: float | None = None, steps: int = 100, restarts: int = 1,
                 targets: int = 9, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 **common) -> None:
        super().__init__(model, eps=eps, **common)
        if steps < 1 or restarts < 1 or targets < 1:
            raise InputError(f"{self.name}: steps, restarts and targets must be >= 1")
        if not (0 <= alpha_max <= 1 and eta >= 1 and 0 < beta <= 1):
            raise InputError(f"{self.name}: need 0 <= alpha_max <= 1, eta >= 1 and 0 < beta <= 1")
        if restarts > 1 and eps is None:
            raise InputError(f"{self.name}: restarts > 1 need eps (random starts are drawn at eps / 2)")
        self.steps, self.restarts, self.targets = int(steps), int(restarts), int(targets)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        best = x.clone()
        best_norm = torch.full((x.shape[0],), float("inf"), dtype=torch.float64, device=x.device)
        with torch.no_grad():
            clean_logits = self._logits(x)
        todo = (clean_logits.argmax(dim=1) == y).nonzero().squeeze(1)  # already wrong: nothing to do
        ranked = clean_logits.argsort(dim=1, descending=True)
        for k in range(1, min(self.targets, clean_logits.shape[1] - 1) + 1):
            for restart in range(self.restarts):
                if todo.numel() == 0:
                    return best
                adv, found = self._run(x[todo], y[todo], ranked[todo, k], generator, restart > 0)
                norms = self.ball.norms(adv - x[todo])
                better = found & (norms < best_norm[todo])
                best[todo[better]] = adv[better]
                best_norm[todo[better]] = norms[better]
                if self.eps is not None:  # within budget: done (AutoAttack's cascade over targets)
                    todo = todo[best_norm[todo] > self.eps]
        if self.eps is not None:
            too_far = best_norm > self.eps
            best[too_far] = x[too_far]
        return best

    def _size(self, d: Tensor) -> Tensor:
        return d.abs().amax(dim=1) if self.norm == "linf" else d.norm(dim=1)

    def _run(self, x0: Tensor, y: Tensor, target: Tensor, generator: torch.Generator,
             random_start: bool) -> tuple[Tensor, Tensor]:
        """One FAB-T run towards ``target``: the smallest misclassified point seen per example
        (the clean input where none) and whether one was seen."""
        lo, hi = self.bounds
        n = x0.shape[0]
        rows = (n,) + (1,) * (x0.ndim - 1)
        x1 = x0.clone()
        if random_start and self.eps is not None:
            x1 = self.ball.boundary(x0, self.eps / 2, generator).clamp_(lo, hi)
        best, best_size = x0.clone(), torch.full((n,), float("inf"), dtype=x0.dtype, device=x0.device)
        flat0 = x0.flatten(1)

        def margin(logits: Tensor, yy: Tensor) -> Tensor:
            return targeted_margin(logits, yy, target)

        for _ in range(self.steps):
            f, grad, _ = self._loss_grad(x1, y, margin)
            with torch.no_grad():
                w = grad.flatten(1)
                flat1 = x1.flatten(1)
                b = (w * flat1).sum(1) - f  # the boundary, linearised at x1: w . x = b
                d = boundary_projection(torch.cat([flat1, flat0]), torch.cat([w, w]), torch.cat([b, b]),
                                        lo, hi, self.norm)
                size = self._size(d).clamp_min(1e-8)
                alpha = (size[:n] / (size[:n] + size[n:])).clamp(0, self.alpha_max).view(rows)
                d1, d2 = d[:n].view_as(x0), d[n:].view_as(x0)
                x1 = ((x1 + self.eta * d1) * (1 - alpha) + (x0 + self.eta * d2) * alpha).clamp_(lo, hi)
                wrong = self._logits(x1).argmax(dim=1) != y
                if bool(wrong.any()):
                    dist = self._size((x1 - x0).flatten(1))
                    smaller = wrong & (dist < best_size)
                    best[smaller] = x1[smaller]
                    best_size = torch.where(smaller, dist, best_size)
                    x1[wrong] = x0[wrong] + self.beta * (x1[wrong] - x0[wrong])  # the backward step
        return best, torch.isfinite(best_size)


class FABTargetedL2(FABTargeted):
    """FAB-T in the L2 norm (minimum norm; eps optional)."""

    name = "fab-t-l2"
    norm = "l2"
