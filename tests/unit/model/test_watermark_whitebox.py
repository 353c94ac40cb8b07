"""White-box watermark: embed while training, verify, survive fine-tuning and pruning, no false positives."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from watermark_digits import HELD, TEST, TRAIN, X, Y
from watermark_digits import mlp as _mlp
from watermark_digits import train as _train

from torchshield.crypto.keys import generate_master_key
from torchshield.errors import FormatError, InputError, IntegrityError, WrongKeyError
from torchshield.model.watermark import (
    WatermarkRecord,
    binomial_p_value,
    make_regularizer,
    read_record,
    verify_whitebox,
    write_record,
)


def _accuracy(model: nn.Module) -> float:
    with torch.no_grad():
        return float((model.eval()(X[TEST]).argmax(1) == Y[TEST]).float().mean())


@pytest.fixture(scope="module")
def marked():
    key = generate_master_key()
    model = _mlp(3)
    regs, record = make_regularizer({"method": "whitebox", "bits": 64, "strength": 2.0}, model, key)
    _train(model, TRAIN, 15, regs)
    return model, record, key


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_mark_present_with_tiny_p_value_and_small_accuracy_cost(marked):
    model, record, key = marked
    verdict = verify_whitebox(_state(model), record, key)
    assert verdict.present and verdict.p_value < 1e-6
    assert verdict.bit_error_rate <= 0.1
    plain = _train(_mlp(3), TRAIN, 15)
    assert _accuracy(model) >= _accuracy(plain) - 0.03


def test_survives_fine_tuning_with_fresh_optimizer_and_pruning(marked):
    model, record, key = marked
    tuned = _train(copy.deepcopy(model), HELD, 5)
    assert verify_whitebox(_state(tuned), record, key).present
    pruned = copy.deepcopy(model)
    from torchshield.model.watermark.robustness import prune_magnitude

    prune_magnitude(pruned, 0.4)
    assert sum(int((p == 0).sum()) for p in pruned.parameters()) > 0.3 * sum(p.numel() for n, p in
                                                                             pruned.named_parameters() if
                                                                             n.endswith("weight"))
    verdict = verify_whitebox(_state(pruned), record, key)
    assert verdict.present, verdict


def test_independent_models_show_no_mark(marked):
    _, record, key = marked
    for seed in (11, 12, 13):
        verdict = verify_whitebox(_state(_train(_mlp(seed), TRAIN, 3)), record, key)
        assert not verdict.present and verdict.p_value > 1e-3


def test_wrong_key_tampered_record_and_other_model_are_refused(marked, tmp_path):
    model, record, key = marked
    with pytest.raises(WrongKeyError):
        verify_whitebox(_state(model), record, generate_master_key())
    doc = record.to_dict()
    doc["commitment"] = "00" * 32
    with pytest.raises(IntegrityError):
        verify_whitebox(_state(model), WatermarkRecord.from_dict(doc), key)
    # the carrier averages over units, so another width of the marked layer is still read (pruned
    # units); another *input* width is another model
    other = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10))
    assert not verify_whitebox(_state(other), record, key).present
    other = nn.Sequential(nn.Linear(32, 100), nn.ReLU(), nn.Linear(100, 10))
    with pytest.raises(InputError, match="record is for another model"):
        verify_whitebox(_state(other), record, key)
    with pytest.raises(InputError, match="no tensor"):
        verify_whitebox({"weight": torch.zeros(3, 3)}, record, key)


def test_record_round_trip_and_no_secret_in_clear(marked, tmp_path):
    model, record, key = marked
    path = tmp_path / "mark.json"
    write_record(path, record)
    again = read_record(path)
    assert again == record
    assert verify_whitebox(_state(model), again, key).present
    text = path.read_text()
    assert key.secret.hex() not in text and key.derive(f"watermark/whitebox/{record.mark_id}").hex() not in text
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(FormatError):
        read_record(tmp_path / "bad.json")
    (tmp_path / "nojson.json").write_text("{")
    with pytest.raises(FormatError):
        read_record(tmp_path / "nojson.json")


def test_config_section_errors_name_the_field():
    key = generate_master_key()
    with pytest.raises(InputError, match="watermark.method"):
        make_regularizer({"method": "magic"}, _mlp(0), key)
    with pytest.raises(InputError, match="watermark.triggers"):
        make_regularizer({"method": "whitebox", "triggers": 5}, _mlp(0), key)
    with pytest.raises(InputError, match="exceed"):
        make_regularizer({"method": "whitebox", "bits": 1000, "layers": ["2.weight"]}, _mlp(0), key)
    with pytest.raises(InputError, match="watermark.carrier"):
        make_regularizer({"method": "whitebox", "carrier": "median"}, _mlp(0), key)
    with pytest.raises(InputError, match="'9.weight'"):
        make_regularizer({"method": "whitebox", "layers": ["9.weight"]}, _mlp(0), key)


@pytest.mark.parametrize("k, n, p0", [(0, 10, 0.5), (7, 10, 0.5), (10, 10, 0.5), (30, 100, 0.1), (64, 64, 0.5)])
def test_binomial_p_value_matches_exact_sum(k, n, p0):
    exact = sum(math.comb(n, i) * p0**i * (1 - p0) ** (n - i) for i in range(k, n + 1))
    assert binomial_p_value(k, n, p0) == pytest.approx(exact, rel=1e-9)
    assert binomial_p_value(256, 256, 0.5) == pytest.approx(2.0**-256, rel=1e-9)


def test_too_few_model_inputs_fall_back_to_the_plain_carrier_and_say_so():
    """A tabular model with 7 features cannot hold 16 bits in its first layer: the mark goes to the
    widest hidden layer with Uchida's carrier, and the record names that carrier."""
    key = generate_master_key()
    model = nn.Sequential(nn.Linear(7, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    _, record = make_regularizer({"method": "whitebox", "bits": 64}, model, key)
    assert record.params["carrier"] == "mean" and list(record.layers) == ["2.weight"]
    _, record = make_regularizer({"method": "whitebox"}, _mlp(0), key)
    assert record.params["carrier"] == "unit-mean" and list(record.layers) == ["0.weight"]
    assert record.params["bits"] == 64
