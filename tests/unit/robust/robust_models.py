"""Small trained models on scikit-learn's digits for the robustness tests (cached per process).

Not a test module: imported by the test_robust_* files (pytest puts this folder on sys.path)."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine more threads spin-wait
    (measured 20x the CPU time). Imported into each robust test module; restores the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits scaled to [0, 1], images (N, 1, 8, 8); fixed split 1297 train / 500 test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1297], y[:1297], x[1297:], y[1297:]


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def make_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10))


def tiny_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, loss_fn=None,
             lr: float = 1e-2, batch: int = 64, seed: int = 0) -> nn.Module:
    """A minimal training loop (stands in for torchshield.nn.loop.fit in these tests)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = loss_fn or (lambda m, xb, yb: F.cross_entropy(m(xb), yb))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(batch):
            opt.zero_grad(set_to_none=True)
            loss_fn(model, x[idx], y[idx]).backward()
            opt.step()
    return model.eval()


@lru_cache(maxsize=2)
def trained(kind: str = "cnn") -> nn.Module:
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits()
    model = make_cnn() if kind == "cnn" else make_mlp()
    return tiny_fit(model, xtr, ytr, epochs=5 if kind == "cnn" else 10)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


class Quantised(nn.Module):
    """A defence that only hides gradients: inputs rounded to ``levels`` steps with a straight
    ``round()``, whose gradient is zero almost everywhere (gradient attacks stall; score-based
    attacks do not care)."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model = model
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


def quantised_mlp(levels: int = 4) -> nn.Module:
    """Factory for bundles (``robust_models:quantised_mlp``): the digits MLP behind quantisation."""
    return Quantised(make_mlp(), levels=levels)


def train_bundle(folder, *, hidden: int, epochs: int):
    """A digits MLP bundle written by the real `torchshield train` CLI (folder/model.tsb)."""
    from torchshield.cli.app import run

    (folder / "c.yaml").write_text(f"""
data: sklearn:digits
model: {{type: mlp, hidden: [{hidden}]}}
epochs: {epochs}
batch_size: 64
optimizer: {{name: adam, lr: 0.01}}
seed: 0
output: {{bundle: model.tsb}}
""")
    assert run(["train", str(folder / "c.yaml"), "--json"]) == 0
    return folder / "model.tsb"
