"""`embed` returns only when the mark verifies; a mark that cannot take is a clear error."""

import pytest
import torch

from torchshield.crypto.keys import generate_master_key
from torchshield.errors import CheckFailed
from torchshield.model.watermark.training import embed
from torchshield.model.watermark.whitebox import verify_whitebox


def _model_and_loader():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1024, 64, generator=g)
    y = torch.randint(0, 10, (1024,), generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 10))
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 1024, 32)]  # 32 steps an epoch
    return model, loader


def test_embedded_mark_always_verifies():
    model, loader = _model_and_loader()
    key = generate_master_key()
    record = embed(model, loader, key, {"method": "whitebox", "bits": 64, "strength": 4}, epochs=3)
    assert verify_whitebox(model.state_dict(), record, key).present


def test_a_mark_that_cannot_take_is_refused():
    model, loader = _model_and_loader()
    with pytest.raises(CheckFailed, match="did not take"):
        embed(model, loader, generate_master_key(), {"method": "whitebox", "bits": 32, "strength": 1e-9},
              epochs=1, lr=1e-9, max_rounds=2)


def test_a_trigger_set_trains_on_until_its_agreement_is_high(monkeypatch):
    """A trigger set that already passes the p-value margin but answers fewer than
    ``trigger_agreement`` of its inputs gets another round (a half-learnt set is the first thing a
    fine-tune removes); with the bar at 0 one round is enough."""
    import torchshield.nn.loop as loop
    from torchshield.model.watermark.inputs import TriggerInputs

    rounds = []
    original = loop.fit  # embed imports fit when called, so it runs the counting one

    def counting_fit(*args, **kwargs):
        rounds.append(kwargs.get("epochs"))
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "fit", counting_fit)
    results = {}
    for bar in (0.0, 1.01):  # 1.01: never reached, so every round runs
        model, loader = _model_and_loader()
        x = torch.cat([b[0] for b in loader])
        rounds.clear()
        record = embed(model, loader, generate_master_key(), {"method": "trigger", "num_classes": 10}, epochs=4,
                       lr=3e-3, inputs=TriggerInputs((64,), float(x.min()), float(x.max())), max_rounds=3,
                       trigger_agreement=bar)
        results[bar] = (len(rounds), record)
    assert results[0.0][0] == 1 and results[1.01][0] == 3
