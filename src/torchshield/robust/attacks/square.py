"""Square attack, Linf and L2 (Andriushchenko et al. 2020): a score-based black-box attack.

Why it is here: gradient attacks can be fooled by gradient masking (non-differentiable
pre-processing, saturated softmax, distillation). Square uses only the model's output scores,
so a defence that merely hides gradients does not survive it. Random search: each query sets one
random square window (all channels) of the perturbation to +-eps and keeps it if the margin loss
drops. Tabular inputs ``(N, D)`` are searched as one row of ``D`` features.

:class:`SquareAttackL2` is the paper's L2 attack (Andriushchenko et al. 2020, Sec. 3.2, Alg. 3;
AutoAttack's ``square.py``): it starts from a grid of small "meta pseudo-Gaussian" blocks (a
centred-rectangles pattern, + on one half and - on the other) with random signs, scaled onto the
sphere of radius eps. Each query draws two windows of the scheduled size: the perturbation in the
second is removed, and the first gets a fresh centred-squares pattern plus its old content, with
the removed mass (and any unused budget) moved into it, so the perturbation keeps norm eps; it is
then clipped to the box and kept if the margin drops. Deviations from the reference code: each
example draws its own windows and pattern orientation (the reference shares them across the
batch), a window may also sit at the last position, and ``queries`` counts the initial query.
Tabular inputs use windows of one row with the pattern split along the row.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.base import Attack

__all__ = ["SquareAttack", "SquareAttackL2"]

_TINY = 1e-12


def _fraction(p_init: float, it: int, queries: int) -> float:
    """The paper's schedule: halve the window area at fixed fractions of a 10,000-query budget."""
    i = int(it / max(queries, 1) * 10000)
    for limit, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256)):
        if i <= limit:
            return p_init / div
    return p_init / 512


def _place(m: int, sh: int, sw: int, rows: Tensor, cols: Tensor,
           generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One random ``sh`` x ``sw`` window per example: (mask [m,1,h,w], top [m], left [m])."""
    h, w = rows.numel(), cols.numel()
    top = torch.randint(0, h - sh + 1, (m,), generator=generator).to(rows.device)
    left = torch.randint(0, w - sw + 1, (m,), generator=generator).to(rows.device)
    window = (((rows >= top[:, None]) & (rows < top[:, None] + sh))[:, None, :, None]
              & ((cols >= left[:, None]) & (cols < left[:, None] + sw))[:, None, None, :])
    return window, top, left


def _windows(m: int, c: int, h: int, w: int, p: float, rows: Tensor, cols: Tensor, generator: torch.Generator,
             like: Tensor) -> tuple[Tensor, Tensor]:
    """The Linf proposal: one random square window per example still attacked, covering about the
    share ``p`` of the image (a run of columns for a one-row input), and a random sign per channel.
    Returns (mask [m,1,h,w], signs [m,c,1,1])."""
    if h == 1:
        sh, sw = 1, max(1, min(int(round(p * w)), w - 1 if w > 1 else 1))
    else:
        side = max(1, min(int(round(math.sqrt(p * h * w))), min(h, w) - 1))
        sh = sw = side
    window, _, _ = _place(m, sh, sw, rows, cols, generator)
    new_sign = torch.randint(0, 2, (m, c, 1, 1), generator=generator).to(like) * 2 - 1
    return window, new_sign


def _rectangles(a: int, b: int) -> Tensor:
    """Centred nested rectangles on an ``a`` x ``b`` patch, the k-th ring out from the centre adding
    1/(k+1)^2 to everything inside it; unit L2 norm (empty when a or b is 0)."""
    if a == 0 or b == 0:
        return torch.zeros(a, b, dtype=torch.float64)
    ring = torch.maximum((torch.arange(a) - a // 2).abs()[:, None], (torch.arange(b) - b // 2).abs()[None, :])
    weights = 1.0 / torch.arange(1, max(a // 2, b // 2) + 2, dtype=torch.float64) ** 2
    values = weights.flip(0).cumsum(0).flip(0)[ring]  # sum of 1/(k+1)^2 over the rings that cover a cell
    return values / values.norm()


@lru_cache(maxsize=64)
def _pattern(sh: int, sw: int) -> Tensor:
    """The L2 proposal's "meta pseudo-Gaussian" patch: centred rectangles, + on the first half and -
    on the second (halves of the rows; of the columns for a one-row window), unit L2 norm.
    Cached (a few sizes per run): callers must not modify it in place."""
    if sh > 1:
        half = torch.cat([_rectangles(sh // 2, sw), -_rectangles(sh - sh // 2, sw)], dim=0)
    else:
        half = torch.cat([_rectangles(sh, sw // 2), -_rectangles(sh, sw - sw // 2)], dim=1)
    return half / half.norm()


def _l2_window(p: float, h: int, w: int) -> tuple[int, int]:
    """The L2 window's size: side ``sqrt(p * h * w)``, at least 3 and odd (a run along a one-row input)."""
    side = max(int(round(math.sqrt(p * h * w) if h > 1 else p * w)), 3)
    side += 1 - side % 2
    return (1, min(side, w)) if h == 1 else (min(side, h), min(side, w))


def _paste(pattern: Tensor, top: Tensor, left: Tensor, flip: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``pattern`` (or its transpose where ``flip``) placed at each example's window: [m,1,h,w]
    (values outside the window are meaningless; callers mask them)."""
    sh, sw = pattern.shape
    if sh == sw:
        both, which = torch.stack([pattern, pattern.t()]), flip.long().to(rows.device)
    else:  # a one-row window has a single orientation
        both, which = pattern[None], torch.zeros(flip.shape[0], dtype=torch.long, device=rows.device)
    i = (rows[None, :] - top[:, None]).clamp(0, sh - 1)
    j = (cols[None, :] - left[:, None]).clamp(0, sw - 1)
    return both[which[:, None, None], i[:, :, None], j[:, None, :]][:, None]


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
            window, new_sign = _windows(m, c, h, w, p, rows, cols, generator, img)
            base = img[todo]
            candidate = torch.where(window, (base + eps * new_sign).clamp(lo, hi), adv[todo])
            new_margin = self._margin(self._logits(candidate.view((m,) + x.shape[1:])), y[todo])
            better = new_margin < margin[todo]
            adv[todo[better]] = candidate[better]
            margin[todo[better]] = new_margin[better]
        return adv.view_as(x)


class SquareAttackL2(SquareAttack):
    """Square attack in the L2 ball (the paper's L2 update, Alg. 3), score-based."""

    name = "square-l2"
    norm = "l2"

    def _search(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        lo, hi = self.bounds
        img = x if x.ndim == 4 else x.reshape(x.shape[0], 1, 1, -1)
        n, c, h, w = img.shape
        eps = float(self.eps or 0.0)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)

        def on_sphere(delta: Tensor) -> Tensor:
            return delta * (eps / (delta.flatten(1).norm(dim=1) + _TINY)).view(-1, 1, 1, 1)

        adv = (img + on_sphere(self._start(img, generator))).clamp(lo, hi)
        margin = self._margin(self._logits(adv.view_as(x)), y)
        for it in range(self.queries - 1):
            todo = (margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            m = todo.numel()
            sh, sw = _l2_window(_fraction(self.p_init, it, self.queries), h, w)
            base = img[todo]
            delta = adv[todo] - base
            inner, top, left = _place(m, sh, sw, rows, cols, generator)
            outer, _, _ = _place(m, sh, sw, rows, cols, generator)
            flip = torch.rand(m, generator=generator) < 0.5  # the pattern's orientation
            signs = torch.randint(0, 2, (m, c, 1, 1), generator=generator).to(img) * 2 - 1
            fresh = _paste(_pattern(sh, sw).to(img), top, left, flip, rows, cols) * inner * signs
            old = delta * inner
            new = fresh + old / (old.pow(2).sum(dim=(2, 3), keepdim=True).sqrt() + _TINY)
            # The inner window gets the mass of both windows plus whatever budget is unused, so
            # that (with the outer window zeroed) the whole perturbation keeps norm eps.
            unused = (eps ** 2 - delta.flatten(1).pow(2).sum(1)).clamp_min(0) / c
            windows = (delta * (inner | outer)).flatten(1).pow(2).sum(1)
            new = new * ((unused + windows).sqrt().view(m, 1, 1, 1)
                         / (new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt() + _TINY))
            delta = torch.where(inner, new, delta.masked_fill(outer, 0.0))
            candidate = (base + on_sphere(delta)).clamp(lo, hi)
            new_margin = self._margin(self._logits(candidate.view((m,) + x.shape[1:])), y[todo])
            better = new_margin < margin[todo]
            adv[todo[better]] = candidate[better]
            margin[todo[better]] = new_margin[better]
        return adv.view_as(x)

    @staticmethod
    def _start(img: Tensor, generator: torch.Generator) -> Tensor:
        """The initial perturbation (before scaling to eps): a grid of ``h // 5``-sided pattern
        blocks, centred, each with a random sign per example and channel."""
        n, c, h, w = img.shape
        bh = max(h // 5, 1)
        bw = bh if h > 1 else max(w // 5, 1)
        delta = torch.zeros_like(img)
        for r in range(max((h - 5 * bh) // 2, 0) if h > 1 else 0, h - bh + 1, bh):
            for q in range(max((w - 5 * bw) // 2, 0), w - bw + 1, bw):
                block = _pattern(bh, bw)
                if bh == bw and float(torch.rand(1, generator=generator)) < 0.5:
                    block = block.t()
                signs = torch.randint(0, 2, (n, c, 1, 1), generator=generator).to(img) * 2 - 1
                delta[:, :, r:r + bh, q:q + bw] += block.to(img) * signs
        return delta
