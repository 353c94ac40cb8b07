"""Randomized smoothing: Clopper-Pearson known answers and coverage, and certificates on a
linear toy model whose true certified radius is its distance to the decision boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robust_models import one_torch_thread  # noqa: F401 (autouse fixture)
from torch import nn

from torchshield.errors import InputError
from torchshield.robust.smoothing import ABSTAIN, SmoothedClassifier, clopper_pearson_lower


def test_clopper_pearson_known_answers():
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    # All successes: the exact bound solves p^n = alpha.
    assert clopper_pearson_lower(20, 20, 0.05) == pytest.approx(0.05 ** (1 / 20), rel=1e-9)
    assert clopper_pearson_lower(50, 100, 0.05) < 0.5 < clopper_pearson_lower(70, 100, 0.05) < 0.7


@pytest.mark.parametrize(("p", "n"), [(0.8, 200), (0.55, 100), (0.7, 60), (0.9, 300)])
def test_clopper_pearson_coverage_is_exact(p, n):
    """P(lower bound > p) summed exactly over the binomial distribution is at most alpha."""
    from scipy.stats import binom

    alpha = 0.05
    k = np.arange(n + 1)
    over = np.array([clopper_pearson_lower(int(i), n, alpha) > p for i in k])
    miss = float(binom.pmf(k, n, p)[over].sum())
    assert miss <= alpha
    assert miss > alpha / 4  # and not vacuous


class Halfplane(nn.Module):
    """Two-class linear classifier sign(w.x + b): its exact L2 robustness radius at x is |w.x + b| / |w|."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.tensor(w), torch.tensor(b)

    def forward(self, x):
        s = x @ self.w + self.b
        return torch.stack([s, -s], dim=1)


def test_certified_radius_is_sound_and_tight_on_a_halfplane():
    model = Halfplane([3.0, 4.0], -1.0)  # |w| = 5
    smoothed = SmoothedClassifier(model, num_classes=2, sigma=0.5, batch_size=5000, seed=0)
    for point in ([1.0, 0.5], [0.0, -0.4], [0.6, 0.2], [-0.3, 0.1]):
        x = torch.tensor(point)
        margin = float(x @ model.w + model.b)
        true_radius, true_class = abs(margin) / 5.0, 0 if margin > 0 else 1
        cert = smoothed.certify(x, n0=100, n=20000, alpha=0.001)
        assert cert.prediction == true_class
        assert cert.radius <= true_radius  # sound (holds with probability >= 1 - alpha)
        assert cert.radius >= true_radius - 0.1  # and close with 20,000 draws


def test_abstains_on_the_boundary_and_predicts_away_from_it():
    model = Halfplane([1.0, 0.0], 0.0)
    smoothed = SmoothedClassifier(model, num_classes=2, sigma=0.25, seed=1)
    assert smoothed.certify(torch.tensor([0.0, 0.3]), n0=50, n=500).prediction == ABSTAIN
    assert smoothed.predict(torch.tensor([0.0, 0.3]), n=500, alpha=0.001) == ABSTAIN
    assert smoothed.predict(torch.tensor([1.0, 0.0]), n=500) == 0
    assert smoothed.predict(torch.tensor([-1.0, 0.0]), n=500) == 1


def test_seed_reproduces_and_bad_parameters_fail():
    model = Halfplane([1.0, 1.0], 0.0)
    a = SmoothedClassifier(model, num_classes=2, sigma=0.5, seed=3).counts(torch.zeros(2), 300)
    b = SmoothedClassifier(model, num_classes=2, sigma=0.5, seed=3).counts(torch.zeros(2), 300)
    assert torch.equal(a, b) and int(a.sum()) == 300
    with pytest.raises(InputError, match="sigma"):
        SmoothedClassifier(model, num_classes=2, sigma=0.0)
    with pytest.raises(InputError, match="alpha"):
        SmoothedClassifier(model, num_classes=2, sigma=0.5).certify(torch.zeros(2), alpha=1.5)
    with pytest.raises(InputError, match="logits"):
        SmoothedClassifier(model, num_classes=3, sigma=0.5).counts(torch.zeros(2), 10)
