"""The threat-model geometry gradient attacks share: an Lp ball around each clean input,
intersected with the box of valid inputs.

Keeping the norm-specific steps (ascent direction, random start, projection, the exact final
budget check) here lets FGSM, PGD and APGD be written once for both Linf and L2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

__all__ = ["BALLS", "L2Ball", "LinfBall", "NormBall"]

_TINY = 1e-12


def _per_example(values: Tensor, like: Tensor) -> Tensor:
    return values.view(-1, *([1] * (like.ndim - 1)))


class NormBall:
    """Contract of an Lp ball: subclasses define direction, sampling and projection."""

    norm: ClassVar[str]

    def direction(self, grad: Tensor) -> Tensor:
        """Steepest-ascent direction of unit norm for a step of size ``alpha``."""
        raise NotImplementedError

    def sample(self, x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
        """A uniform random point in the eps-ball around ``x`` (drawn on CPU for determinism)."""
        raise NotImplementedError

    def boundary(self, x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
        """A random point on the ball's boundary around ``x`` (APGD's starting point)."""
        raise NotImplementedError

    def projector(self, x: Tensor, eps: float | Tensor, lo: float, hi: float) -> Callable[[Tensor], Tensor]:
        """Return ``z -> nearest point of the eps-ball around x inside [lo, hi]`` (approximately for L2)."""
        raise NotImplementedError

    def norms(self, delta: Tensor) -> Tensor:
        """Per-example norm of a perturbation, in float64 so the budget check is exact."""
        raise NotImplementedError

    def enforce(self, x_adv: Tensor, x: Tensor, eps: float, lo: float, hi: float) -> Tensor:
        """Guarantee ``norm(x_adv - x) <= eps`` exactly (float rounding can overshoot by an ulp)."""
        raise NotImplementedError


class LinfBall(NormBall):
    norm = "linf"

    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def sample(self, x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x + (2 * noise - 1) * eps

    def boundary(self, x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
        t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1
        t = t / _per_example(t.flatten(1).abs().amax(dim=1).clamp_min(_TINY), t)
        return x + (t * eps).to(x.device)

    def projector(self, x: Tensor, eps: float | Tensor, lo: float, hi: float) -> Callable[[Tensor], Tensor]:
        # The box and the ball intersect in one box: precompute it so each step is two ops.
        if isinstance(eps, Tensor):
            lower, upper = (x - eps).clamp_(min=lo), (x + eps).clamp_(max=hi)
        else:
            lower, upper = self._exact_edges(x, float(eps), lo, hi)
        return lambda z: torch.minimum(torch.maximum(z, lower), upper)

    @staticmethod
    def _exact_edges(x: Tensor, eps: float, lo: float, hi: float) -> tuple[Tensor, Tensor]:
        """Box edges that lie inside the eps-ball exactly, in x's dtype and without float64 work.

        ``x - eps`` rounded to float32 can fall outside the ball by half an ulp of the result
        (and float32(0.1) > 0.1). Subtracting eps rounded *down* and then moving each edge one
        ulp inwards covers both; the ball shrinks by at most two ulps, which no attack notices.
        (A float64 check costs ~20 ms per 256x28x28 batch here, half an FGSM step.)"""
        e = torch.tensor(eps, dtype=x.dtype)
        if float(e) > eps:
            e = torch.nextafter(e, torch.zeros_like(e))
        lower = torch.nextafter(x - e, torch.tensor(float("inf"), dtype=x.dtype))
        upper = torch.nextafter(x + e, torch.tensor(float("-inf"), dtype=x.dtype))
        # When eps is below half an ulp of x (eps = 0 included) the inward ulp would cross x and
        # move the point itself (by 6e-8 near 1, or to -1.4e-45 below a bound of 0): x is always
        # inside the ball, so neither edge may pass it. Clamping to the box comes last.
        lower = torch.minimum(lower, x).clamp_(lo, hi)
        upper = torch.maximum(upper, x).clamp_(lo, hi)
        return lower, upper

    def norms(self, delta: Tensor) -> Tensor:
        return delta.detach().double().flatten(1).abs().amax(dim=1)

    def enforce(self, x_adv: Tensor, x: Tensor, eps: float, lo: float, hi: float) -> Tensor:
        return self.projector(x, eps, lo, hi)(x_adv)  # the projector's edges are exact


class L2Ball(NormBall):
    norm = "l2"

    def direction(self, grad: Tensor) -> Tensor:
        norms = grad.flatten(1).norm(dim=1).clamp_min(_TINY)
        return grad / _per_example(norms, grad)

    def sample(self, x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
        # A Gaussian direction and a radius uniform in [0, eps] (Madry et al.; torchattacks).
        # Not uniform in volume: in d dimensions that puts nearly every start on the sphere
        # (radius eps * U^(1/d)), which measured 1 to 1.5 points weaker PGD-L2 on digits at
        # eps 0.5 (the start uses up the budget before the first gradient step).
        gauss = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        radius = torch.rand(x.shape[0], generator=generator, dtype=x.dtype) * eps
        gauss = gauss / _per_example(gauss.flatten(1).norm(dim=1).clamp_min(_TINY), gauss)
        return x + (gauss * _per_example(radius, gauss)).to(x.device)

    def boundary(self, x: Tensor, eps: float, generator: torch.Generator) -> Tensor:
        gauss = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        gauss = gauss / _per_example(gauss.flatten(1).norm(dim=1).clamp_min(_TINY), gauss)
        return x + (gauss * eps).to(x.device)

    def projector(self, x: Tensor, eps: float | Tensor, lo: float, hi: float) -> Callable[[Tensor], Tensor]:
        def project(z: Tensor) -> Tensor:
            delta = z - x
            norms = delta.flatten(1).norm(dim=1).clamp_min(_TINY)
            scale = torch.clamp(eps / norms, max=1.0) if isinstance(eps, Tensor) else (eps / norms).clamp(max=1.0)
            return (x + delta * _per_example(scale, delta)).clamp_(lo, hi)

        return project

    def norms(self, delta: Tensor) -> Tensor:
        return delta.detach().double().flatten(1).norm(dim=1)

    def enforce(self, x_adv: Tensor, x: Tensor, eps: float, lo: float, hi: float) -> Tensor:
        if eps == 0:
            return x.clone()
        x_adv = self.projector(x, eps, lo, hi)(x_adv)
        shrink = 1.0
        for _ in range(8):  # clamping only shrinks delta, so shrinking towards x stays in bounds
            over = self.norms(x_adv - x) > eps
            if not bool(over.any()):
                break
            shrink *= 1 - 1e-6
            delta = (x_adv - x) * shrink
            x_adv = torch.where(_per_example(over, x_adv), x + delta, x_adv).clamp_(lo, hi)
        over = self.norms(x_adv - x) > eps
        if bool(over.any()):  # never seen; the clean input is always a valid answer
            x_adv = torch.where(_per_example(over, x_adv), x, x_adv)
        return x_adv


BALLS: dict[str, NormBall] = {"linf": LinfBall(), "l2": L2Ball()}
