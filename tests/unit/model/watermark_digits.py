"""Shared by the watermark tests: sklearn digits in a fixed order, a small MLP, a short training run."""

from __future__ import annotations

import torch
from torch import nn


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return torch.tensor(x / 16.0, dtype=torch.float32)[order], torch.tensor(y)[order]


X, Y = _digits()
TRAIN, HELD, TEST = slice(0, 1000), slice(1000, 1400), slice(1400, None)


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def train(model: nn.Module, part: slice, epochs: int, regularizers=()) -> nn.Module:
    """Train on one thread: a model this small runs several times faster without intra-op threads,
    and under ``pytest -n 2`` the other core belongs to the other worker. The setting is restored."""
    from torchshield.nn.loop import fit

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X[part], Y[part]), batch_size=64,
                                         shuffle=True, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(model, loader, epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), lr=2e-3),
            regularizers=regularizers, progress=False)
    finally:
        torch.set_num_threads(threads)
    return model.eval()
