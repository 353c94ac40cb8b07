"""DP-SGD: clipping is exact per example, noise and sampling are real, the budget is met from below."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshield.errors import InputError
from torchshield.privacy.accounting import epsilon_for
from torchshield.train import build_model, evaluate, fit, load_dataset
from torchshield.train.dp import PrivacyConfig, make_private
from torchshield.train.per_example import OpacusHooks, PerExampleClipper


def _reference_clipped_sum(model, x, y, max_norm):
    """Slow and obviously right: one backward per example, clip, sum."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        scale = min(1.0, max_norm / (float(norm) + 1e-6))
        for t, g in zip(total, grads):
            t += scale * g
    return dict(zip(params, total))


class _SeqLinear(nn.Module):
    """Linear over a sequence dimension and a layer used twice: the materialised paths."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.head = nn.Linear(6 * 3, 5)

    def forward(self, x):
        h = torch.relu(self.proj(x.view(-1, 3, 4)))
        h = self.proj(h[..., :4]) + h
        return self.head(h.flatten(1))


@pytest.mark.parametrize("make, shape", [
    (lambda: build_model({"type": "mlp", "hidden": [16, 16]}, in_shape=(1, 8, 8), num_classes=5), (1, 8, 8)),
    (lambda: build_model({"type": "cnn", "channels": [3, 4]}, in_shape=(1, 8, 8), num_classes=5), (1, 8, 8)),
    (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                           nn.Linear(48, 5)), (1, 8, 8)),
    (_SeqLinear, (12,)),
])
@pytest.mark.parametrize("engine", ["ghost", "hooks"])
def test_clipped_sums_match_per_example_reference(make, shape, engine):
    torch.manual_seed(0)
    model = make()
    x, y = torch.rand(12, *shape), torch.randint(0, 5, (12,))
    expected = _reference_clipped_sum(model, x, y, 0.3)
    eng = PerExampleClipper(model) if engine == "ghost" else OpacusHooks(model, "hooks")
    eng.reset()
    got = eng.clipped_sum(nn.functional.cross_entropy(model(x), y, reduction="none"), 0.3)
    eng.close()
    assert set(got) == set(expected)
    for p in expected:
        torch.testing.assert_close(got[p], expected[p], atol=2e-6, rtol=1e-4)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("sklearn:digits")


def test_dp_training_on_digits_reaches_accuracy_within_budget(digits):
    torch.manual_seed(0)
    model = build_model({"type": "mlp", "hidden": [64]}, in_shape=digits.input_shape, num_classes=10)
    engine = make_private(model, config=PrivacyConfig(epsilon=3.0, delta=1e-5, seed=1,
                                                      insecure_seed_for_tests=True),
                          dataset_size=len(digits.train), batch_size=128, epochs=8)
    assert engine.mode == "ghost"
    opt = torch.optim.SGD(engine.model.parameters(), lr=0.5, momentum=0.9)
    result = fit(engine.model, digits.train.loader(128), epochs=8, optimizer=opt, privacy=engine, progress=False)
    engine.close()
    record = engine.record()
    assert record["steps"] == engine.planned_steps == result.steps
    # reported epsilon is the accountant's, and the target is met from below
    independent = epsilon_for([(record["noise_multiplier"], record["sample_rate"], record["steps"])],
                              delta=1e-5, accountant="rdp")
    assert record["epsilon"] == pytest.approx(independent, abs=1e-9)
    assert 3.0 - 0.02 <= record["epsilon"] <= 3.0
    assert evaluate(engine.model, digits.test.loader(512))["accuracy"] >= 0.75


def _one_step(physical, noise_seed=3, noise_multiplier=1.0):
    torch.manual_seed(0)
    model = build_model({"type": "mlp", "hidden": [8]}, in_features=10, num_classes=3)
    x, y = torch.rand(60, 10), torch.randint(0, 3, (60,))
    cfg = PrivacyConfig(epsilon=50.0, delta=1e-3, noise_multiplier=noise_multiplier, seed=noise_seed,
                        insecure_seed_for_tests=True,
                        max_physical_batch_size=physical)
    engine = make_private(model, config=cfg, dataset_size=60, batch_size=30, epochs=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=30)
    fit(engine.model, loader, epochs=1, optimizer=torch.optim.SGD(engine.model.parameters(), 0.1),
        privacy=engine, progress=False)
    return torch.cat([p.detach().flatten() for p in engine.model.parameters()])


def test_virtual_batches_give_the_same_step():
    torch.testing.assert_close(_one_step(None), _one_step(7), atol=1e-6, rtol=1e-5)


def test_noise_is_drawn_and_unseeded_runs_differ():
    assert not torch.allclose(_one_step(None, noise_seed=3), _one_step(None, noise_seed=4))
    assert not torch.allclose(_one_step(None, noise_seed=None), _one_step(None, noise_seed=None))


def test_batchnorm_is_fixed_and_an_unsupported_layer_is_refused_before_training():
    model = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    engine = make_private(model, config=PrivacyConfig(epsilon=5.0, delta=1e-3, seed=0, noise_multiplier=2.0,
                                                      insecure_seed_for_tests=True),
                          dataset_size=100,
                          batch_size=20, epochs=1)
    assert any("BatchNorm1d -> GroupNorm" in f for f in engine.fixes)
    assert engine.mode == "ghost"  # GroupNorm is clipped by our engine, no Opacus fallback
    engine.close()
    with pytest.raises(InputError, match=r"cannot clip layer 1 \(Bilinear"):
        make_private(nn.Sequential(nn.Linear(4, 4), nn.Bilinear(4, 4, 2)),
                     config=PrivacyConfig(epsilon=5.0, delta=1e-3, noise_multiplier=2.0),
                     dataset_size=100, batch_size=20, epochs=1)


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc, self.bn = nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 3), nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(self.rnn(x)[0][:, -1]))


def test_a_refused_layer_that_opacus_fixes_replaced_is_named_as_the_user_wrote_it():
    """Opacus' validator turns nn.LSTM into its DPLSTM before our engine sees the model: the
    refusal names the user's LSTM too, and only the fix of that layer (not the BatchNorm's)."""
    with pytest.raises(InputError, match=r"cannot clip layer rnn \(DPLSTM.*fixes replaced rnn: LSTM -> DPLSTM\)") \
            as caught:
        make_private(_Recurrent(), config=PrivacyConfig(epsilon=5.0, delta=1e-3, noise_multiplier=2.0),
                     dataset_size=100, batch_size=20, epochs=1)
    assert "GroupNorm" not in caught.value.message


@pytest.mark.parametrize("kwargs, fragment", [
    ({"epsilon": 0.0}, "epsilon must be > 0"),
    ({"epsilon": -1.0}, "epsilon must be > 0"),
    ({"epsilon": 1.0, "delta": 1.5}, "delta must be in"),
    ({"epsilon": 1.0, "max_grad_norm": 0}, "max_grad_norm"),
    ({"epsilon": 1.0, "accountant": "moments"}, "accountant"),
])
def test_bad_privacy_settings(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        PrivacyConfig(**kwargs)


def test_delta_at_least_one_over_n_is_refused():
    with pytest.raises(InputError, match="delta=0.01 is >= 1/N for N=100"):
        make_private(nn.Linear(3, 2), config=PrivacyConfig(epsilon=1.0, delta=0.01), dataset_size=100,
                     batch_size=10, epochs=1)


def test_explicit_noise_multiplier_that_overspends_is_refused():
    with pytest.raises(InputError, match="spends epsilon"):
        make_private(nn.Linear(3, 2), config=PrivacyConfig(epsilon=1.0, delta=1e-4, noise_multiplier=0.3),
                     dataset_size=1000, batch_size=100, epochs=5)


def test_regularizers_apply_under_dp_and_constant_ones_are_skipped():
    torch.manual_seed(0)
    model = build_model({"type": "mlp", "hidden": [8]}, in_features=10, num_classes=3)
    x, y = torch.rand(60, 10), torch.randint(0, 3, (60,))
    engine = make_private(model, config=PrivacyConfig(epsilon=50.0, delta=1e-3, noise_multiplier=0.5, seed=0,
                                                      insecure_seed_for_tests=True),
                          dataset_size=60, batch_size=30, epochs=3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=30)
    shrink = lambda m: 50.0 * sum(p.pow(2).sum() for p in m.parameters())  # noqa: E731
    constant = lambda m: torch.tensor(1.0)  # noqa: E731
    fit(engine.model, loader, epochs=3, optimizer=torch.optim.SGD(engine.model.parameters(), 0.005),
        regularizers=[shrink, constant], privacy=engine, progress=False)
    assert max(float(p.detach().abs().max()) for p in engine.model.parameters()) < 0.2
