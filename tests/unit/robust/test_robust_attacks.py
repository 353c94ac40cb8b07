"""Attacks: they lower accuracy, stay within budget and bounds, match a reference PGD, are
deterministic under a seed, leave the model untouched, and refuse bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from robust_models import accuracy, digits, one_torch_thread, trained  # noqa: F401 (autouse fixture)
from torch import nn

from torchshield.errors import InputError
from torchshield.robust.attacks import (
    ATTACKS,
    PGD,
    Attack,
    FABTargeted,
    FABTargetedL2,
    available_attacks,
    build_attack,
    get_attack,
    register_attack,
    register_builtin_attacks,
)

N = 200
# (name, eps, extra parameters): few steps keep the test suite fast.
CASES = [
    ("fgsm", 0.1, {}),
    ("pgd", 0.1, {"steps": 10}),
    ("pgd-l2", 1.0, {"steps": 10}),
    ("apgd-ce", 0.1, {"steps": 10}),
    ("apgd-ce-l2", 1.0, {"steps": 10}),
    ("square", 0.1, {"queries": 200}),
    ("square-l2", 1.0, {"queries": 200}),
    ("fab-t", 0.1, {"steps": 10}),
    ("fab-t-l2", 1.0, {"steps": 10}),
    ("cw-l2", 1.5, {"steps": 30, "search_steps": 2, "lr": 0.1}),
]


@pytest.fixture(scope="module")
def setup():
    model = trained("mlp")
    _, _, xt, yt = digits()
    return model, xt[:N], yt[:N]


def _norm(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Exact norm of the perturbation between two float32 tensors (difference taken in float64)."""
    flat = (adv.double() - x.double()).flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize(("name", "eps", "params"), CASES, ids=[c[0] for c in CASES])
def test_attack_lowers_accuracy_within_budget_and_bounds(setup, name, eps, params):
    model, x, y = setup
    attack = build_attack(name, model, eps=eps, seed=0, **params)
    adv = attack(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float(_norm(adv, x, attack.norm).max()) <= eps  # exact, computed in float64
    clean, robust = accuracy(model, x, y), accuracy(model, adv, y)
    assert clean > 0.9
    assert robust < clean - 0.2, f"{name}: {clean} -> {robust}"


def _reference_pgd(model, x, y, eps, alpha, steps):
    """The straightforward textbook loop (no random start), as in the anchor measurements."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_pgd_and_fgsm_match_reference_loop(setup, kind):
    _, x, y = setup
    model = trained(kind)
    ours = PGD(model, eps=0.1, steps=10, alpha=0.025, random_start=False)(x, y)
    ref = _reference_pgd(model, x, y, 0.1, 0.025, 10)
    assert float((ours - ref).abs().max()) < 1e-5
    assert torch.equal(model(ours).argmax(1), model(ref).argmax(1))
    fgsm = build_attack("fgsm", model, eps=0.05)(x, y)
    assert float((fgsm - _reference_pgd(model, x, y, 0.05, 0.05, 1)).abs().max()) < 1e-6


def test_restarts_never_weaker_and_random_start_deterministic(setup):
    model, x, y = setup
    a1 = PGD(model, eps=0.08, steps=5, seed=3)(x, y)
    a2 = PGD(model, eps=0.08, steps=5, seed=3)(x, y)
    assert torch.equal(a1, a2)
    a3 = PGD(model, eps=0.08, steps=5, seed=4)(x, y)
    assert not torch.equal(a1, a3)
    multi = PGD(model, eps=0.08, steps=5, seed=3, restarts=3)(x, y)
    assert accuracy(model, multi, y) <= accuracy(model, a1, y)


@pytest.mark.parametrize("name", ["pgd", "square", "cw-l2"])
def test_model_untouched_and_mode_restored(setup, name):
    model, x, y = setup
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    build_attack(name, model, eps=0.1, seed=0, **({"queries": 5} if name == "square" else
                                                 {"steps": 3, "search_steps": 1} if name == "cw-l2"
                                                 else {"steps": 3}))(x[:32], y[:32])
    assert model.training
    model.eval()
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_attack_runs_in_eval_mode(setup):
    _, x, y = setup
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, z):
            seen.append(self.training)
            return self.lin(z.flatten(1))

    probe = Probe().train()
    PGD(probe, eps=0.1, steps=2)(x[:8], y[:8])
    assert seen and not any(seen) and probe.training


def test_tabular_inputs(setup):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = torch.rand(16, 5), torch.randint(0, 3, (16,))
    for name in ("pgd", "square", "apgd-ce"):
        adv = build_attack(name, model, eps=0.2, seed=1, **({"queries": 20} if name == "square" else {"steps": 3}))(x, y)
        assert adv.shape == x.shape and float(_norm(adv, x, "linf").max()) <= 0.2


@pytest.mark.parametrize(("kwargs", "call", "message"), [
    ({"eps": -0.1}, None, "epsilon must be"),
    ({"eps": 1.5}, None, "larger than the input range"),
    ({"eps": 0.1}, lambda x, y: (x * 2, y), "outside the declared bounds"),
    ({"eps": 0.1}, lambda x, y: (x, None), "labels are missing"),
    ({"eps": 0.1}, lambda x, y: (x, y + 10), "out of range"),
    ({"eps": 0.1}, lambda x, y: (x, y[:-1]), "one class per example"),
    ({"eps": 0.1, "num_classes": 12}, None, "12 classes were declared"),
])
def test_bad_input_is_refused(setup, kwargs, call, message):
    model, x, y = setup
    x, y = x[:8], y[:8]
    with pytest.raises(InputError, match=message) as info:
        attack = PGD(model, steps=1, **kwargs)
        attack(*(call(x, y) if call else (x, y)))
    assert info.value.exit_code == 2


def test_model_without_logits_is_refused(setup):
    _, x, y = setup
    with pytest.raises(InputError, match="logits of shape"):
        PGD(nn.Conv2d(1, 2, 3), eps=0.1, steps=1)(x[:4], y[:4])  # a feature map, not logits
    with pytest.raises(InputError, match="out of range"):
        PGD(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), eps=0.1, steps=1)(x[:40], y[:40].clamp(min=5))


def test_registry_is_strict_and_extensible():
    register_builtin_attacks()
    assert {"fgsm", "pgd", "pgd-l2", "cw-l2", "square", "square-l2", "apgd-ce", "fab-t", "fab-t-l2"} <= set(
        available_attacks())
    assert get_attack("FAB-T") is FABTargeted and get_attack("fab-t-l2") is FABTargetedL2
    assert get_attack("fab-t").access == "gradient" and not get_attack("fab-t").requires_eps  # minimum norm

    class Noise(Attack):
        name = "test-noise"

        def _perturb(self, x, y, generator):
            return x + self.eps * torch.sign(torch.randn(x.shape, generator=generator))

    registry: dict = {}
    register_builtin_attacks(registry)
    register_attack(Noise, registry=registry)
    with pytest.raises(ValueError, match="already registered"):
        register_attack(type("Other", (Noise,), {}), registry=registry)
    register_attack(Noise)
    try:
        adv = build_attack("test-noise", nn.Linear(4, 2), eps=0.1, seed=0)(torch.full((3, 4), 0.5), [0, 1, 0])
        assert float((adv.double() - 0.5).abs().max()) <= 0.1
    finally:
        ATTACKS.pop("test-noise")
    with pytest.raises(InputError, match="unknown attack"):
        build_attack("nope", nn.Linear(4, 2), eps=0.1)
    with pytest.raises(InputError, match="unexpected keyword"):
        build_attack("pgd", nn.Linear(4, 2), eps=0.1, bogus=1)
