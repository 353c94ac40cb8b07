"""Carlini-Wagner L2 (Carlini & Wagner 2017): a minimum-norm attack.

Why it is here: budgeted attacks answer "is there an adversarial example within eps?"; CW
answers "how far is the nearest one we can find?", which is what distillation and detector
evaluations need (defensive distillation famously resists FGSM but not CW). Optimises in tanh
space, so the box constraint holds without clipping, with a binary search on the trade-off
constant ``c``. With ``eps`` set, examples whose best perturbation is larger than eps are left
clean, so the attack also reports robust accuracy at that radius.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.base import Attack

__all__ = ["CarliniWagnerL2"]

_NO_UPPER = 1e10


class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2: smallest adversarial perturbation found (eps optional)."""

    name = "cw-l2"
    norm = "l2"
    requires_eps = False

    def __init__(self, model: nn.Module, *, eps: float | None = None, c: float = 1.0, kappa: float = 0.0,
                 steps: int = 100, search_steps: int = 5, lr: float = 0.01, **common) -> None:
        super().__init__(model, eps=eps, **common)
        if steps < 1 or search_steps < 1 or not c > 0 or not lr > 0 or kappa < 0:
            raise InputError(f"{self.name}: steps, search_steps, c and lr must be > 0 and kappa >= 0")
        self.c, self.kappa, self.steps, self.search_steps, self.lr = c, kappa, steps, search_steps, lr

    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        lo, hi = self.bounds
        n = x.shape[0]
        unit = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w0 = torch.atanh(unit)
        const = torch.full((n,), self.c, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, _NO_UPPER)
        best_l2 = torch.full_like(const, float("inf"))
        best = x.clone()
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                x_adv = (torch.tanh(w) + 1) / 2 * (hi - lo) + lo
                logits = self._logits(x_adv)
                l2 = (x_adv - x).flatten(1).pow(2).sum(dim=1)
                hinge = (self._margin(logits, y) + self.kappa).clamp(min=0)
                (w.grad,) = torch.autograd.grad((l2 + const * hinge).sum(), w)
                optimizer.step()
                with torch.no_grad():
                    wrong = logits.argmax(dim=1) != y
                    if self.kappa > 0:
                        wrong &= hinge == 0
                    better = wrong & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best[better] = x_adv.detach()[better]
                    succeeded |= wrong
            with torch.no_grad():
                upper = torch.where(succeeded, torch.minimum(upper, const), upper)
                lower = torch.where(succeeded, lower, torch.maximum(lower, const))
                const = torch.where(upper < _NO_UPPER, (lower + upper) / 2,
                                    torch.where(succeeded, const, const * 10))
        if self.eps is not None:
            too_far = best_l2.sqrt() > self.eps
            best[too_far] = x[too_far]
        return best
