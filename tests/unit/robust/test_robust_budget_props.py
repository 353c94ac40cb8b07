"""Properties every attack keeps, over random budgets and input boxes (Hypothesis, derandomised):
eps = 0 returns the input bit for bit, and every adversarial example lies inside the declared
bounds and the eps-ball exactly (checked in float64, no ulp of slack)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robust_models import one_torch_thread  # noqa: F401 (autouse fixture)
from torch import nn

from torchshield.robust.attacks import available_attacks, build_attack, get_attack

FAST = {"steps": 3, "queries": 8, "targets": 2, "search_steps": 1, "restarts": 1}
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _params(name: str) -> dict:
    import inspect

    accepted = inspect.signature(get_attack(name).__init__).parameters
    return {k: v for k, v in FAST.items() if k in accepted}


def _model(lo: float, hi: float) -> nn.Module:
    torch.manual_seed(0)
    lin = nn.Linear(16, 4)

    class Scaled(nn.Module):  # sensitive to the input wherever the box lies
        def forward(self, x):
            return lin(((x - lo) / (hi - lo) * 2 - 1).flatten(1)) * 5

    return Scaled().eval()


def _float32_inside(lo: float, hi: float) -> tuple[float, float]:
    """The outermost float32 values inside [lo, hi] (float32(0.1) itself is above 0.1)."""
    lo32, hi32 = torch.tensor(lo), torch.tensor(hi)
    lo32 = lo32 if float(lo32) >= lo else torch.nextafter(lo32, torch.tensor(float("inf")))
    hi32 = hi32 if float(hi32) <= hi else torch.nextafter(hi32, torch.tensor(float("-inf")))
    return float(lo32), float(hi32)


def _inputs(lo: float, hi: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lo, hi = _float32_inside(lo, hi)
    x = (lo + torch.rand(6, 1, 4, 4, generator=g) * (hi - lo)).clamp(lo, hi)
    x[0] = lo  # examples sitting exactly on the bounds, where the -1.4e-45 and 6e-8 drifts appeared
    x[1] = hi
    x[2, 0, 0, :2] = torch.tensor([lo, hi])
    return x, torch.randint(0, 4, (6,), generator=g)


boxes = st.tuples(st.sampled_from([0.0, -1.0, 0.5, -3.0, 1e-3]),
                  st.sampled_from([1.0, 1e-3, 2.5, 255.0, 0.1])).map(lambda t: (t[0], t[0] + t[1]))


@pytest.mark.parametrize("name", available_attacks())
@SETTINGS
@given(box=boxes, seed=st.integers(0, 2**16))
def test_eps_zero_returns_the_input_bit_identical(name, box, seed):
    lo, hi = box
    x, y = _inputs(lo, hi, seed)
    adv = build_attack(name, _model(lo, hi), eps=0.0, bounds=box, seed=seed, **_params(name))(x, y)
    assert torch.equal(adv, x) and adv.dtype == x.dtype
    assert adv.data_ptr() != x.data_ptr()  # a copy: callers may modify it


@pytest.mark.parametrize("name", available_attacks())
@SETTINGS
@given(box=boxes, seed=st.integers(0, 2**16),
       fraction=st.sampled_from([1e-12, 1e-9, 3e-8, 1e-4, 0.01, 0.1, 0.5, 1.0]))
def test_results_stay_inside_bounds_and_budget_exactly(name, box, seed, fraction):
    lo, hi = box
    x, y = _inputs(lo, hi, seed)
    cls = get_attack(name)
    eps = fraction * (hi - lo) * (4.0 if cls.norm == "l2" else 1.0)  # L2 budgets scale with sqrt(16)
    adv = build_attack(name, _model(lo, hi), eps=eps, bounds=box, seed=seed, **_params(name))(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and bool(torch.isfinite(adv).all())
    assert float(adv.min()) >= lo and float(adv.max()) <= hi  # exact: no -1.4e-45 below a bound of 0
    assert not bool(torch.signbit(adv[adv == 0]).any()) or lo < 0  # not even a negative zero
    delta = (adv.double() - x.double()).flatten(1)
    norms = delta.abs().amax(1) if cls.norm == "linf" else delta.norm(dim=1)
    assert float(norms.max()) <= eps
