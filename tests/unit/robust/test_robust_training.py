"""Adversarial-training losses: config parsing, train/eval mode, no leaked attack gradients, and
that adversarial training buys robust accuracy through the shared training loop."""

from __future__ import annotations

import pytest
import torch
from robust_models import accuracy, digits, make_mlp, one_torch_thread  # noqa: F401 (autouse fixture)
from torch import nn

from torchshield.errors import InputError
from torchshield.nn.loop import fit
from torchshield.robust.attacks import PGD
from torchshield.robust.training import (
    FastFGSMLoss,
    GaussianNoiseLoss,
    PGDTrainingLoss,
    TradesLoss,
    make_loss,
)

SECTIONS = [
    ({"method": "pgd", "eps": 0.1, "steps": 3}, PGDTrainingLoss),
    ({"method": "pgd", "eps": 1.0, "steps": 3, "norm": "l2"}, PGDTrainingLoss),
    ({"method": "trades", "eps": 0.1, "steps": 3, "beta": 3}, TradesLoss),
    ({"method": "fast", "eps": 0.1}, FastFGSMLoss),
    ({"gaussian_noise": 0.25}, GaussianNoiseLoss),
]


class ModeProbe(nn.Module):
    """Records the mode of every forward pass; dropout makes train/eval observable."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.body(x)


@pytest.mark.parametrize(("section", "cls"), SECTIONS, ids=lambda v: str(v))
def test_losses_are_per_example_and_keep_modes_and_parameters_clean(section, cls):
    loss_fn = make_loss(section, bounds=(0.0, 1.0))
    assert isinstance(loss_fn, cls)
    x, y = digits()[0][:16], digits()[1][:16]
    model = ModeProbe().train()
    loss = loss_fn(model, x, y)
    assert loss.shape == (16,) and bool(torch.isfinite(loss).all())
    assert model.training  # restored after the inner attack
    assert model.modes[-1] is True  # the training forward runs in train mode
    if cls is not GaussianNoiseLoss:
        assert False in model.modes  # the inner attack ran in eval mode
    assert all(p.grad is None for p in model.parameters())  # the attack left no gradient behind
    loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("section", "message"), [
    ({"method": "pgd"}, "eps is required"),
    ({"method": "pgd", "eps": -0.1}, "epsilon must be"),
    ({"method": "pgd", "eps": 2.0}, "larger than the input range"),
    ({"method": "pgd", "eps": 0.1, "steps": 0}, "steps must be"),
    ({"method": "magic", "eps": 0.1}, "method must be one of"),
    ({"method": "fast", "eps": 0.1, "norm": "l2"}, "not supported"),
    ({"method": "pgd", "eps": 0.1, "epsilon": 3}, "unknown field"),
    ({"gaussian_noise": -1}, "must be > 0"),
    ({"gaussian_noise": 0.1, "blur": 2}, "unknown field"),
])
def test_bad_sections_are_refused(section, message):
    with pytest.raises(InputError, match=message):
        make_loss(section, bounds=(0.0, 1.0))


def _train(loss_fn, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    xtr, ytr, _, _ = digits()
    model = make_mlp()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    fit(model, loader, epochs=8, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), loss_fn=loss_fn,
        progress=False)
    return model.eval()


def test_adversarial_training_raises_robust_accuracy():
    _, _, xt, yt = digits()
    standard = _train(None)
    hardened = _train(make_loss({"method": "pgd", "eps": 0.1, "steps": 3}, bounds=(0.0, 1.0)))
    fast = _train(make_loss({"method": "fast", "eps": 0.1}, bounds=(0.0, 1.0)))

    def robust(m):
        return accuracy(m, PGD(m, eps=0.1, steps=10, seed=0)(xt, yt), yt)

    r_std, r_pgd, r_fast = robust(standard), robust(hardened), robust(fast)
    assert accuracy(hardened, xt, yt) > 0.85 and accuracy(fast, xt, yt) > 0.85
    assert r_pgd > r_std + 0.15, (r_std, r_pgd)
    assert r_fast > r_std + 0.1, (r_std, r_fast)
