"""FAB-T (Linf, L2) and the paper's L2 Square attack: known answers for FAB's projection, the
minimum-norm contract (an example is fooled within eps or returned clean), invariance to rescaled
logits (what FAB adds to APGD), the L2 Square update's geometry, and strength against
torchattacks 3.5.1 on the same seeded digits models."""

from __future__ import annotations

import pytest
import torch
from robust_models import accuracy, digits, one_torch_thread, trained  # noqa: F401 (autouse fixture)
from torch import nn

from torchshield.errors import InputError
from torchshield.robust.attacks import FABTargeted, FABTargetedL2, SquareAttackL2, build_attack
from torchshield.robust.attacks.fab import boundary_projection
from torchshield.robust.attacks.square import _pattern

N = 200


@pytest.fixture(scope="module")
def data():
    _, _, xt, yt = digits()
    return xt[:N], yt[:N]


def _norms(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    flat = (adv.double() - x.double()).flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


# FAB's projection ------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_known_answers(norm):
    t = torch.full((2, 4), 0.5, dtype=torch.float64)
    t[1, 0] = 0.95  # one coordinate 0.05 from the upper edge of the box
    w = torch.ones(2, 4, dtype=torch.float64)
    b = (w * t).sum(1) + 0.4  # the hyperplane lies 0.4 further along w
    d = boundary_projection(t, w, b, 0.0, 1.0, norm)
    # Free: the smallest move spreads evenly (Linf and L2 agree for equal weights).
    assert torch.allclose(d[0], torch.full((4,), 0.1, dtype=torch.float64))
    # Boxed: the first coordinate stops at 1, the other three share the rest: 0.05 + 3 * lam = 0.4.
    assert torch.allclose(d[1], torch.tensor([0.05, 0.35 / 3, 0.35 / 3, 0.35 / 3], dtype=torch.float64))
    # Unreachable within the box: every coordinate goes to the edge that brings w.x closest to b.
    far = boundary_projection(t, w, b + 10, 0.0, 1.0, norm)
    assert torch.allclose(t + far, torch.ones_like(t))
    # Unequal weights: L2 moves each coordinate in proportion to its weight, Linf by the same amount.
    w2 = torch.tensor([[2.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    d2 = boundary_projection(t[:1], w2, (w2 * t[:1]).sum(1) - 0.5, 0.0, 1.0, norm)
    expect = [-0.2, -0.1, 0.0, 0.0] if norm == "l2" else [-1 / 6, -1 / 6, 0.0, 0.0]
    assert torch.allclose(d2[0], torch.tensor(expect, dtype=torch.float64))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_in_any_box_is_the_unit_box_projection_rescaled(norm):
    g = torch.Generator().manual_seed(0)
    t, w = torch.rand(32, 20, generator=g, dtype=torch.float64), torch.randn(32, 20, generator=g, dtype=torch.float64)
    b = (w * t).sum(1) + torch.randn(32, generator=g, dtype=torch.float64) * 2
    lo, hi = -3.0, 7.0
    unit = boundary_projection(t, w, b, 0.0, 1.0, norm)
    # x = lo + s * t maps the unit box onto [lo, hi]; the hyperplane w.t = b becomes (w / s).x = b + (w / s).lo
    s = hi - lo
    boxed = boundary_projection(lo + s * t, w / s, b + (w / s).sum(1) * lo, lo, hi, norm)
    assert torch.allclose(boxed, s * unit, atol=1e-9)


def test_projection_matches_torchattacks():
    fab = pytest.importorskip("torchattacks.attacks.fab")
    g = torch.Generator().manual_seed(1)
    for norm, ref in (("linf", fab.projection_linf), ("l2", fab.projection_l2)):
        t = torch.rand(64, 50, generator=g, dtype=torch.float64)
        w = torch.randn(64, 50, generator=g, dtype=torch.float64)
        w[:8, :25] = 0  # zero weights do not move
        b = (w * t).sum(1) + torch.randn(64, generator=g, dtype=torch.float64) * 3
        assert torch.allclose(boundary_projection(t, w, b, 0.0, 1.0, norm), ref(t, w.clone(), b.clone()), atol=1e-10)


# FAB-T -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "eps"), [(FABTargeted, 0.1), (FABTargetedL2, 0.75)])
def test_fab_returns_an_adversarial_within_eps_or_the_clean_input(data, cls, eps):
    model = trained("mlp")
    x, y = data
    adv = cls(model, eps=eps, steps=10, seed=0)(x, y)
    norms = _norms(adv, x, cls.norm)
    assert float(norms.max()) <= eps and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        wrong = model(adv).argmax(1) != y
        clean_ok = model(x).argmax(1) == y
    untouched = (adv == x).flatten(1).all(1)
    assert bool((wrong | untouched).all())  # no half-way points: fooled, or the input itself
    assert bool((untouched | clean_ok).all()) and int((wrong & clean_ok).sum()) > 40  # and it fools
    assert torch.equal(adv, cls(model, eps=eps, steps=10, seed=0)(x, y))


@pytest.mark.parametrize("cls", [FABTargeted, FABTargetedL2])
def test_fab_without_eps_is_the_minimum_norm_attack_the_budgeted_one_thresholds(data, cls):
    """eps=None keeps each example's smallest adversarial over all targets; the budgeted attack
    fools exactly the examples whose smallest one is within eps (one restart: no randomness)."""
    model = trained("mlp")
    x, y = data
    free = cls(model, steps=10)(x, y)
    with torch.no_grad():
        fooled_free = model(free).argmax(1) != y
        clean_ok = model(x).argmax(1) == y
    assert int(fooled_free.sum()) >= int(clean_ok.sum()) - 2  # unbounded: nearly everything is fooled
    eps = 0.1 if cls.norm == "linf" else 0.75
    within = fooled_free & clean_ok & (_norms(free, x, cls.norm) <= eps)
    with torch.no_grad():
        budgeted = (model(cls(model, eps=eps, steps=10)(x, y)).argmax(1) != y) & clean_ok
    assert abs(int(within.sum()) - int(budgeted.sum())) <= 1  # batch order can flip a float tie
    assert int(within.sum()) > 40


def test_fab_is_blind_to_rescaled_logits_where_apgd_ce_is_not(data):
    """The adversary's trick: multiply the logits by 1e4. Softmax saturates, cross-entropy's
    gradient is exactly zero on most inputs and APGD-CE calls the model robust; FAB-T only needs
    the direction of z_t - z_y's gradient and reports the same figure as on the plain model."""
    x, y = data

    class Scaled(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner(z) * 1e4

    plain, scaled = trained("mlp"), Scaled(trained("mlp")).eval()
    fab_plain = accuracy(plain, FABTargeted(plain, eps=0.1, steps=10)(x, y), y)
    fab_scaled = accuracy(scaled, FABTargeted(scaled, eps=0.1, steps=10)(x, y), y)
    apgd_scaled = accuracy(scaled, build_attack("apgd-ce", scaled, eps=0.1, steps=10, seed=0)(x, y), y)
    assert abs(fab_scaled - fab_plain) <= 1 / N
    assert apgd_scaled >= fab_scaled + 0.3  # measured 0.945 vs 0.425


def test_fab_restarts_seeded_and_never_weaker(data):
    model = trained("cnn")
    x, y = data
    one = accuracy(model, FABTargeted(model, eps=0.1, steps=5, targets=3)(x, y), y)
    a = FABTargeted(model, eps=0.1, steps=5, targets=3, restarts=2, seed=4)(x, y)
    assert torch.equal(a, FABTargeted(model, eps=0.1, steps=5, targets=3, restarts=2, seed=4)(x, y))
    assert accuracy(model, a, y) <= one  # the first restart is the plain run; later ones only add


def test_fab_tabular_inputs_and_a_wide_box():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 5, generator=g) * 20 - 10
    y = model(x).argmax(1)
    for cls, eps in ((FABTargeted, 2.0), (FABTargetedL2, 4.0)):
        adv = cls(model, eps=eps, steps=20, bounds=(-10.0, 10.0), seed=0)(x, y)
        assert adv.shape == x.shape and float(_norms(adv, x, cls.norm).max()) <= eps
        assert float(adv.min()) >= -10 and float(adv.max()) <= 10
        assert accuracy(model, adv, y) < 0.9


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 0}, "must be >= 1"),
    ({"targets": 0}, "must be >= 1"),
    ({"alpha_max": 1.5}, "alpha_max"),
    ({"eta": 0.5}, "eta"),
    ({"beta": 0.0}, "beta"),
    ({"restarts": 2, "eps": None}, "need eps"),
])
def test_fab_bad_parameters_are_refused(kwargs, message):
    params = {"eps": 0.1, **kwargs}
    with pytest.raises(InputError, match=message) as info:
        build_attack("fab-t", nn.Linear(4, 3), **params)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("kind", "norm", "eps", "steps"), [
    ("mlp", "Linf", 0.1, 10), ("mlp", "L2", 0.5, 10), ("cnn", "Linf", 0.1, 10), ("cnn", "L2", 0.5, 10),
    ("mlp", "Linf", 0.1, 100),
])
def test_fab_t_as_strong_as_torchattacks_fab_targeted(kind, norm, eps, steps):
    """Same settings on both sides (9 targets, one restart, alpha_max 0.1, eta 1.05, beta 0.9) on the
    500 digits test images. With one restart neither side draws a random number, and the algorithm
    is the same up to float rounding in the projection (a closed form here, a bisection there), so
    the figures should agree; tolerance 2 examples (0.4 points) either way for float ties at the
    boundary. Measured: equal in all five settings, labels agreeing on every image."""
    torchattacks = pytest.importorskip("torchattacks")
    model = trained(kind)
    _, _, x, y = digits()
    cls = FABTargeted if norm == "Linf" else FABTargetedL2
    ours = accuracy(model, cls(model, eps=eps, steps=steps, seed=0)(x, y), y)
    theirs = accuracy(model, torchattacks.FAB(model, norm=norm, eps=eps, steps=steps, multi_targeted=True,
                                              n_classes=10, seed=0)(x, y), y)
    assert abs(ours - theirs) <= 2 / len(y) + 1e-9, (ours, theirs)
    assert ours < accuracy(model, x, y) - 0.3


# The paper's L2 Square -------------------------------------------------------------------------

def test_square_l2_pattern_is_the_papers():
    """Centred rectangles, + on one half and - on the other, unit norm; the same numbers as
    torchattacks' ``eta`` (up to its random transpose)."""
    p = _pattern(7, 7)
    assert abs(float(p.norm()) - 1) < 1e-12
    assert bool((p[:3] > 0).all()) and bool((p[3:] < 0).all())
    assert float(p[1, 3]) == float(p[:3].max()) and float(p[5, 3]) == float(p[3:].min())  # peaks at the centres
    assert torch.allclose(p, p.flip(1))  # symmetric left to right
    sq = pytest.importorskip("torchattacks").Square(nn.Identity(), norm="L2")
    sq.device = torch.device("cpu")
    for s in (3, 5, 7, 9):
        ref = sq.eta(s)
        ours = _pattern(s, s).float()
        assert torch.allclose(ours, ref, atol=1e-6) or torch.allclose(ours.t(), ref, atol=1e-6)


def test_square_l2_keeps_the_perturbation_on_the_sphere(data):
    """Away from the box's edges nothing is clipped, so every query's candidate - and so the result
    - has norm eps exactly (mass is moved between windows, never lost)."""
    model = trained("mlp")
    x = 0.4 + 0.2 * data[0]  # inputs in [0.4, 0.6]: an L2 budget of 0.3 cannot reach the box
    y = data[1]
    adv = SquareAttackL2(model, eps=0.3, queries=200, seed=0)(x, y)
    norms = _norms(adv, x, "l2")
    assert float((norms - 0.3).abs().max()) < 1e-5
    assert accuracy(model, adv, y) < accuracy(model, x, y)
    # Near the edges the box clips, and the result stays inside the ball and the box.
    adv = SquareAttackL2(model, eps=1.0, queries=200, seed=0)(*data)
    assert float(_norms(adv, data[0], "l2").max()) <= 1.0 and float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_square_l2_tabular_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 3)).eval()
    x = torch.rand(32, 12, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    adv = SquareAttackL2(model, eps=0.5, queries=100, seed=0)(x, y)
    assert adv.shape == x.shape and float(_norms(adv, x, "l2").max()) <= 0.5
    assert accuracy(model, adv, y) < 1


@pytest.mark.parametrize("eps", [0.5, 1.0])
def test_square_l2_at_least_as_strong_as_torchattacks(eps):
    """Robust accuracy averaged over three seeds on each side, 300 queries, the digits MLP on the 500
    test images: ours <= theirs + 0.5 points (the issue's bar). Measured: ours 68.9 / 12.5 %, theirs
    75.7 / 26.5 % at eps 0.5 / 1.0 - on 8x8 images torchattacks never places a window at the last
    position (its random offset excludes h - s), so with the first side of 7 both of its windows
    always sit at the top left."""
    torchattacks = pytest.importorskip("torchattacks")
    model = trained("mlp")
    _, _, x, y = digits()
    ours = sum(accuracy(model, SquareAttackL2(model, eps=eps, queries=300, seed=s)(x, y), y) for s in range(3)) / 3
    theirs = sum(accuracy(model, torchattacks.Square(model, norm="L2", eps=eps, n_queries=300, seed=s)(x, y), y)
                 for s in range(3)) / 3
    assert ours <= theirs + 0.005, (ours, theirs)
