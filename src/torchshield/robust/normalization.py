"""Normalisation inside the model, so attacks work in the input space users reason about.

Why: a budget "eps = 8/255 per pixel" is stated for raw inputs in [0, 1]. If the data pipeline
normalises before the model, an attack on normalised tensors silently uses a different budget per
channel. Wrapping the model with :class:`NormalizedModel` keeps attacks, bounds and eps in raw
input units."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from torchshield.errors import InputError

__all__ = ["NormalizedModel"]


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)``; ``mean``/``std`` per channel (images) or per feature (tables)."""

    def __init__(self, model: nn.Module, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor,
                 *, channel_dim: int = 1) -> None:
        super().__init__()
        mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean_t.shape != std_t.shape or mean_t.ndim != 1 or not bool((std_t > 0).all()):
            raise InputError("normalisation needs 1-D mean and std of equal length with std > 0")
        self.model = model
        self.channel_dim = channel_dim
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        shape = [1] * x.ndim
        shape[self.channel_dim] = -1
        return self.model((x - self.mean.view(shape)) / self.std.view(shape))
