"""Square attack, Linf (Andriushchenko et al. 2020): a score-based black-box attack.

Why it is here: gradient attacks can be fooled by gradient masking (non-differentiable
pre-processing, saturated softmax, distillation). Square uses only the model's output scores,
so a defence that merely hides gradients does not survive it. Random search: each query sets one
random square window (all channels) of the perturbation to +-eps and keeps it if the margin loss
drops. Tabular inputs ``(N, D)`` are searched as one row of ``D`` features.

:class:`SquareAttackL2` is a simplified L2 variant, not the paper's exact L2 update (which moves
mass between two nested windows): each query adds a random +-window of the scheduled size to
the perturbation, rescales it onto the L2 sphere of radius eps and clips to the box, and keeps
the candidate if the margin drops. It is score-based like the Linf attack, which is what the
ensemble needs it for (a second opinion that does not read gradients).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.base import Attack

__all__ = ["SquareAttack", "SquareAttackL2"]


def _fraction(p_init: float, it: int, queries: int) -> float:
    """The paper's schedule: halve the window area at fixed fractions of a 10,000-query budget."""
    i = int(it / max(queries, 1) * 10000)
    for limit, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256)):
        if i <= limit:
            return p_init / div
    return p_init / 512


def _windows(m: int, c: int, h: int, w: int, p: float, rows: Tensor, cols: Tensor, generator: torch.Generator,
             like: Tensor) -> tuple[Tensor, Tensor, int, int]:
    """One random square window per example still attacked, covering about the share ``p`` of the
    image (a run of columns for a one-row input), and a random sign per channel: the proposal of
    both Square attacks (Andriushchenko et al.). Returns (mask [m,1,h,w], signs [m,c,1,1], sh, sw)."""
    if h == 1:
        sh, sw = 1, max(1, min(int(round(p * w)), w - 1 if w > 1 else 1))
    else:
        side = max(1, min(int(round(math.sqrt(p * h * w))), min(h, w) - 1))
        sh = sw = side
    top = torch.randint(0, h - sh + 1, (m,), generator=generator).to(rows.device)
    left = torch.randint(0, w - sw + 1, (m,), generator=generator).to(rows.device)
    window = (((rows >= top[:, None]) & (rows < top[:, None] + sh))[:, None, :, None]
              & ((cols >= left[:, None]) & (cols < left[:, None] + sw))[:, None, None, :])
    new_sign = torch.randint(0, 2, (m, c, 1, 1), generator=generator).to(like) * 2 - 1
    return window, new_sign, sh, sw


class SquareAttack(Attack):
    """Square attack, Linf: score-based random search, no gradients needed."""

    name = "square"
    norm = "linf"
    access = "score"

    def __init__(self, model: nn.Module, *, eps: float, queries: int = 1000, p_init: float = 0.8,
                 **common) -> None:
        super().__init__(model, eps=eps, **common)
        if queries < 1 or not 0 < p_init <= 1:
            raise InputError(f"{self.name}: queries must be >= 1 and 0 < p_init <= 1")
        self.queries, self.p_init = int(queries), float(p_init)

    def _perturb(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            return self._search(x, y, generator)

    def _search(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        lo, hi = self.bounds
        img = x if x.ndim == 4 else x.reshape(x.shape[0], 1, 1, -1)
        n, c, h, w = img.shape
        eps = self.eps
        # Initialisation: vertical stripes of +-eps.
        signs = torch.randint(0, 2, (n, c, 1, w), generator=generator).to(img) * 2 - 1
        adv = (img + eps * signs).clamp(lo, hi)
        margin = self._margin(self._logits(adv.view_as(x)), y)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        for it in range(self.queries - 1):
            todo = (margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            p = _fraction(self.p_init, it, self.queries)
            m = todo.numel()
            window, new_sign, sh, sw = _windows(m, c, h, w, p, rows, cols, generator, img)
            base = img[todo]
            candidate = torch.where(window, (base + eps * new_sign).clamp(lo, hi), adv[todo])
            new_margin = self._margin(self._logits(candidate.view((m,) + x.shape[1:])), y[todo])
            better = new_margin < margin[todo]
            adv[todo[better]] = candidate[better]
            margin[todo[better]] = new_margin[better]
        return adv.view_as(x)


class SquareAttackL2(SquareAttack):
    """Square-style random search in the L2 ball (simplified L2 update), score-based."""

    name = "square-l2"
    norm = "l2"

    def _search(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        lo, hi = self.bounds
        img = x if x.ndim == 4 else x.reshape(x.shape[0], 1, 1, -1)
        n, c, h, w = img.shape
        eps = float(self.eps or 0.0)
        dim = c * h * w

        def onto_sphere(delta: Tensor) -> Tensor:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            return delta * (eps / norms)

        # Initialisation: vertical stripes of +-eps/sqrt(d), an L2 perturbation of norm eps.
        signs = torch.randint(0, 2, (n, c, 1, w), generator=generator).to(img) * 2 - 1
        delta = onto_sphere(signs.expand(n, c, h, w) / dim ** 0.5)
        adv = (img + delta).clamp(lo, hi)
        margin = self._margin(self._logits(adv.view_as(x)), y)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        for it in range(self.queries - 1):
            todo = (margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            p = _fraction(self.p_init, it, self.queries)
            m = todo.numel()
            window, new_sign, sh, sw = _windows(m, c, h, w, p, rows, cols, generator, img)
            # A window of total L2 mass ~ eps * sqrt(p): the paper's share of the budget per query.
            bump = window.to(img) * new_sign * (eps * math.sqrt(p) / math.sqrt(sh * sw * c))
            base = img[todo]
            cand_delta = onto_sphere((adv[todo] - base) + bump)
            candidate = (base + cand_delta).clamp(lo, hi)
            new_margin = self._margin(self._logits(candidate.view((m,) + x.shape[1:])), y[todo])
            better = new_margin < margin[todo]
            adv[todo[better]] = candidate[better]
            margin[todo[better]] = new_margin[better]
        return adv.view_as(x)
