"""Obfuscation keeps the function (outputs within 1e-5), hides weights and names, and reverses bit-exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchshield.crypto.keys import generate_master_key
from torchshield.errors import InputError, WrongKeyError
from torchshield.model.obfuscate import deobfuscate, obfuscate, obfuscate_module, torch_equal


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.Tanh(), nn.Linear(32, 10))


def _mlp_norms() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 40), nn.BatchNorm1d(40), nn.GELU(), nn.Dropout(0.1),
                         nn.Linear(40, 24), nn.LayerNorm(24), nn.LeakyReLU(0.1), nn.Linear(24, 5))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Flatten(), nn.Linear(12 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10), nn.LogSoftmax(-1))


def _inputs(model: nn.Module) -> torch.Tensor:
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    return torch.randn(32, 1, 8, 8) if isinstance(first, nn.Conv2d) else torch.randn(32, first.in_features)


def _trained_stats(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics, then switch to eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(_inputs(model) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("build", [_mlp, _mlp_norms, _cnn], ids=["mlp", "mlp-bn-ln", "cnn"])
def test_obfuscated_module_keeps_outputs_and_changes_weights(build):
    torch.manual_seed(0)
    model = _trained_stats(build())
    x = _inputs(model)
    before = model(x)
    original = copy.deepcopy(model.state_dict())
    obfuscate_module(model, generate_master_key())
    after = model.eval()(x)
    assert torch.allclose(before, after, atol=1e-5, rtol=0)
    changed = [k for k, v in model.state_dict().items() if v.dim() >= 1 and not torch.equal(v, original[k])]
    assert len(changed) >= 3  # hidden-layer weights moved


@pytest.mark.parametrize("build", [_mlp, _mlp_norms, _cnn], ids=["mlp", "mlp-bn-ln", "cnn"])
def test_bundle_tensors_scrambled_and_restored_bit_exactly(build):
    torch.manual_seed(1)
    model = _trained_stats(build())
    key = generate_master_key()
    tensors, entry = obfuscate(model, key)
    original = model.state_dict()
    assert not set(tensors) & set(original)  # names no longer match
    assert "perms" not in str(entry) and original.keys().isdisjoint(str(entry).split('"'))
    assert entry["changed"]["names_scrambled"] == len(original) and entry["changed"]["tensors_changed"] >= 3
    restored = deobfuscate(tensors, entry, key)
    assert set(restored) == set(original)
    assert all(torch_equal(restored[k], original[k]) for k in original)
    # the obfuscated weights loaded under the original names still compute the same function
    twin = copy.deepcopy(model)
    import base64

    from torchshield.crypto.envelope import open_sealed
    from torchshield.model.obfuscate import _context, _Plan

    plan = _Plan.from_json(open_sealed(key, base64.b64decode(entry["sealed"]), context=_context(entry["nonce"])))
    twin.load_state_dict({plan.names[k]: v for k, v in tensors.items()})
    x = _inputs(model)
    assert torch.allclose(model(x), twin.eval()(x), atol=1e-5, rtol=0)


def test_same_key_and_nonce_give_same_plan_other_key_differs():
    torch.manual_seed(2)
    key = generate_master_key()
    a, b, c = _mlp(), _mlp(), _mlp()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    obfuscate_module(a, key, nonce="n1")
    obfuscate_module(b, key, nonce="n1")
    obfuscate_module(c, generate_master_key(), nonce="n1")
    assert torch.equal(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_wrong_key_cannot_deobfuscate():
    model = _mlp()
    tensors, entry = obfuscate(model, generate_master_key())
    with pytest.raises(WrongKeyError):
        deobfuscate(tensors, entry, generate_master_key())


class _Gate(nn.Module):
    """Mixes units (a softmax over features): permuting around it is fine, scaling is not."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.randn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.mix


@pytest.mark.parametrize("middle, name", [(nn.Softmax(-1), "1"), (_Gate(16), "1")])
def test_unsafe_layer_is_named(middle, name):
    model = nn.Sequential(nn.Linear(8, 16), middle, nn.Linear(16, 4))
    with pytest.raises(InputError, match=rf"layer '{name}' \({type(middle).__name__}[:)]"):
        obfuscate(model, generate_master_key())


def test_non_sequential_model_is_refused():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):  # pragma: no cover - never run
            return self.a(x) + self.b(x)

    with pytest.raises(InputError, match="Branchy"):
        obfuscate(Branchy(), generate_master_key())


def test_tampered_tensor_set_is_rejected():
    from torchshield.errors import IntegrityError

    key = generate_master_key()
    tensors, entry = obfuscate(_mlp(), key)
    tensors.pop(next(iter(tensors)))
    with pytest.raises(IntegrityError):
        deobfuscate(tensors, entry, key)
