"""The shared loop, zoo and data loading: real training on real (small) data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from torchshield.errors import InputError
from torchshield.train import build_model, evaluate, fit, load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("sklearn:digits")


def test_mlp_learns_digits_and_callbacks_see_every_epoch(digits):
    torch.manual_seed(0)
    model = build_model({"type": "mlp", "hidden": [64]}, in_shape=digits.input_shape, num_classes=10)
    seen = []
    result = fit(model, digits.train.loader(64, shuffle=True, seed=0), epochs=3,
                 optimizer=torch.optim.Adam(model.parameters(), 1e-2), callbacks=[seen.append], progress=False)
    assert [e.epoch for e in seen] == [1, 2, 3]
    assert result.loss_history[0] > result.loss_history[-1]
    assert result.examples == 3 * len(digits.train)
    assert evaluate(model, digits.test.loader(256))["accuracy"] > 0.9


def test_callback_false_stops_early(digits):
    model = build_model({"type": "mlp", "hidden": [8]}, in_shape=digits.input_shape, num_classes=10)
    result = fit(model, digits.train.loader(256), epochs=5, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                 callbacks=[lambda e: e.epoch < 2], progress=False)
    assert result.epochs == 2 and result.stopped_early


def test_custom_loss_fn_and_regularizer_are_used(digits):
    model = build_model({"type": "mlp", "hidden": [8]}, in_shape=digits.input_shape, num_classes=10)
    calls = {"loss": 0}

    def loss_fn(m, x, y):
        calls["loss"] += 1
        return torch.nn.functional.cross_entropy(m(x), y)  # a scalar is accepted too

    # a huge L2 term drives the weights to ~0: proves the regularizer's gradient is applied
    reg = lambda m: 100.0 * sum(p.pow(2).sum() for p in m.parameters())  # noqa: E731
    fit(model, digits.train.loader(256), epochs=2, optimizer=torch.optim.SGD(model.parameters(), 0.004),
        loss_fn=loss_fn, regularizers=[reg], progress=False)
    assert calls["loss"] == 2 * len(digits.train.loader(256))
    assert max(float(p.abs().max()) for p in model.parameters()) < 0.05


def test_cnn_on_digits_images(digits):
    assert digits.input_shape == (1, 8, 8) and digits.input_bounds == (0.0, 1.0)
    model = build_model({"type": "cnn", "channels": [4]}, in_shape=digits.input_shape, num_classes=10)
    assert model(digits.test.x[:3]).shape == (3, 10)


def test_factory_hook(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def make(in_features, num_classes, width=3):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(in_features, width), torch.nn.Linear(width, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model({"type": "mymodels:make", "width": 5}, in_features=7, num_classes=2)
    assert model[0].out_features == 5 and model[1].out_features == 2


@pytest.mark.parametrize("spec, fragment", [
    ({"type": "transformer"}, "unknown model type"),
    ({"type": "mlp", "depth": 3}, "unknown option 'depth'"),
    ({"type": "nope.module:make"}, "cannot import"),
])
def test_bad_model_specs(spec, fragment):
    with pytest.raises(InputError, match=fragment):
        build_model(spec, in_features=4, num_classes=2)


def test_breast_cancer_is_standardised_on_train_split():
    data = load_dataset({"name": "sklearn:breast_cancer", "seed": 1})
    assert data.num_classes == 2 and data.input_shape == (30,)
    assert torch.allclose(data.train.x.mean(0), torch.zeros(30), atol=1e-4)
    assert len(data.train) + len(data.test) == 569


def test_parquet_with_label_column_and_bounds(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 90, 200), "bmi": rng.normal(25, 4, 200),
                       "note": ["x"] * 200, "outcome": rng.choice(["no", "yes"], 200)})
    df.loc[0, "age"] = 500  # outside declared bounds: clipped
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    data = load_dataset({"path": str(path), "label": "outcome", "normalize": "minmax",
                         "bounds": {"age": [18, 100]}})
    assert data.feature_names == ("age", "bmi") and data.classes == ("no", "yes")
    assert float(data.train.x.max()) <= 1.0 + 1e-6
    assert data.normalization["shift"][0] + data.normalization["scale"][0] <= 100  # age 500 clipped to 100
    with pytest.raises(InputError, match="not numeric"):
        load_dataset({"path": str(path), "label": "outcome", "features": ["age", "note"]})
    with pytest.raises(InputError, match="label"):
        load_dataset({"path": str(path), "label": "missing"})


@pytest.mark.parametrize("path", [["a.csv"], 3, "", {"x": 1}])
def test_a_data_path_that_is_not_a_string_is_bad_input(path):
    """Audit: '--data {"path": ["a"]}' crashed with an internal error (TypeError in pathlib)."""
    with pytest.raises(InputError, match="data.path must be a file path"):
        load_dataset({"path": path, "label": "y"})
