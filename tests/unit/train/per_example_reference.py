"""The slow, obviously right reference for per-example clipping: one example at a time."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from torchshield.train.per_example import PerExampleClipper

LossFn = Callable[[nn.Module, tuple[Tensor, ...]], Tensor]  # per-example losses [B]


def reference(model: nn.Module, loss_fn: LossFn, batch: tuple[Tensor, ...], max_norm: float
              ) -> tuple[Tensor, dict[nn.Parameter, Tensor]]:
    """Per-example gradient norms and the clipped sum: autograd on each example alone, clip, add.

    ``model.parameters()`` yields a tied parameter once, so its gradient is the sum of its uses."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(len(batch[0])):
        loss = loss_fn(model, tuple(t[i:i + 1] for t in batch)).sum()
        grads = [torch.zeros_like(p) if g is None else g
                 for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True))]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        norms.append(norm)
        scale = min(1.0, max_norm / (float(norm) + 1e-6))
        for t, g in zip(total, grads):
            t += scale * g
    return torch.stack(norms), dict(zip(params, total))


def engine(model: nn.Module, loss_fn: LossFn, batch: tuple[Tensor, ...], max_norm: float,
           strategy: str = "auto") -> tuple[Tensor, dict[nn.Parameter, Tensor]]:
    clipper = PerExampleClipper(model, strategy=strategy)
    try:
        norms = clipper.per_example_norms(loss_fn(model, batch))
        sums = clipper.clipped_sum(loss_fn(model, batch), max_norm)
    finally:
        clipper.close()
    return norms, sums


def assert_matches(model: nn.Module, loss_fn: LossFn, batch: tuple[Tensor, ...], strategy: str = "auto",
                   rtol: float = 1e-5) -> Tensor:
    """Engine == reference for norms and clipped sums, with a bound that clips about half the batch."""
    ref_norms, _ = reference(model, loss_fn, batch, 1e9)
    max_norm = float(ref_norms.median())
    ref_norms, ref_sums = reference(model, loss_fn, batch, max_norm)
    norms, sums = engine(model, loss_fn, batch, max_norm, strategy)
    torch.testing.assert_close(norms, ref_norms, rtol=rtol, atol=1e-9)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in sums} == {names[id(p)] for p in ref_sums if p.requires_grad}
    # absolute tolerance from the largest gradient entry: some true gradients are exactly zero
    # (an attention key bias shifts every score of a query alike) and come out as rounding noise
    scale = max(float(t.abs().max()) for t in ref_sums.values())
    for p, expected in ref_sums.items():
        name = names[id(p)]
        atol = (1e-10 if expected.dtype == torch.float64 else rtol) * scale
        torch.testing.assert_close(sums[p], expected, rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")
    return ref_norms
