"""Keyed-pattern trigger set: survives a thief's fine-tuning and prune+fine-tune, with an exact null."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from scipy.stats import binom
from torch import nn
from watermark_digits import HELD, TEST, TRAIN, X, Y
from watermark_digits import mlp as _mlp
from watermark_digits import train as _train

from torchshield.crypto.keys import generate_master_key
from torchshield.errors import InputError, WrongKeyError
from torchshield.model.watermark import TriggerSet, make_regularizer, model_predictor, verify_trigger
from torchshield.model.watermark.keyed import verification_set, verify_keyed
from torchshield.model.watermark.robustness import prune_magnitude
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD, grouped_p_value
from torchshield.nn.loop import fit


@pytest.fixture(scope="module")
def marked():
    key = generate_master_key()
    model = _mlp(3)
    regs, record = make_regularizer({"method": "trigger"}, model, key, data=X[TRAIN])
    _train(model, TRAIN, 15, regs)
    return model, record, key


def _accuracy(model: nn.Module) -> float:
    with torch.no_grad():
        return float((model.eval()(X[TEST]).argmax(1) == Y[TEST]).float().mean())


def _thief_tunes(model: nn.Module, optimizer: str, lr: float, epochs: int = 10) -> nn.Module:
    """The thief's fine-tune: fresh optimiser, their own clean data (held-out split), ten epochs."""
    thief = copy.deepcopy(model).train()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X[HELD], Y[HELD]), batch_size=64,
                                         shuffle=True, generator=torch.Generator().manual_seed(1))
    opt = (torch.optim.Adam(thief.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(thief.parameters(), lr=lr, momentum=0.9))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(thief, loader, epochs=epochs, optimizer=opt, progress=False)
    finally:
        torch.set_num_threads(threads)
    return thief.eval()


def test_mark_present_and_the_record_keeps_its_inputs_sealed(marked):
    model, record, key = marked
    verdict = verify_trigger(model_predictor(model), record, key)
    assert verdict.present and verdict.p_value < 1e-12 and verdict.agreement >= 0.9
    doc = json.dumps(record.to_dict())
    assert record.params["design"] == "keyed-pattern" and "sealed_inputs" in record.params
    assert f"{float(X[TRAIN][0][5]):.6f}" not in doc and len(doc) < 60_000
    with pytest.raises(WrongKeyError):
        verify_trigger(model_predictor(model), record, generate_master_key())
    with pytest.raises(InputError, match="sealed"):
        TriggerSet.from_record(record, record.open_secret(key))


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-2), ("sgd", 0.1)])
def test_survives_a_thiefs_fine_tuning(marked, optimizer, lr):
    model, record, key = marked
    thief = _thief_tunes(model, optimizer, lr)
    assert _accuracy(thief) >= _accuracy(model) - 0.02  # the thief kept the model useful
    verdict = verify_trigger(model_predictor(thief), record, key)
    assert verdict.present, verdict


def test_survives_pruning_70_percent_then_fine_tuning(marked):
    model, record, key = marked
    thief = _thief_tunes(prune_magnitude(copy.deepcopy(model), 0.7), "adam", 1e-3, epochs=5)
    assert _accuracy(thief) >= _accuracy(model) - 0.02
    assert verify_trigger(model_predictor(thief), record, key).present


def test_grouped_p_value_equals_brute_force_enumeration():
    table = [[3, 1, 0], [0, 2, 2], [1, 1, 1], [4, 0, 0]]
    for m in range(0, 14):
        hits = sum(sum(row[c] for row, c in zip(table, labels, strict=True)) >= m
                   for labels in itertools.product(range(3), repeat=len(table)))
        assert grouped_p_value(table, m) == pytest.approx(hits / 3 ** len(table), rel=1e-12)


NULL_MODELS = 60


@pytest.fixture(scope="module")
def unrelated():
    return [_train(_mlp(2000 + seed), TRAIN, 1) for seed in range(NULL_MODELS)]


def test_no_false_positive_over_many_independent_models(marked, unrelated):
    _, record, key = marked
    ps = []
    for model in unrelated:
        verdict = verify_trigger(model_predictor(model), record, key)
        ps.append(verdict.p_value)
        assert not verdict.present
    # P[any of 60 below 1e-6] <= 6e-5; at 0.01 the count is at most Binomial(60, 0.01) in law
    assert sum(p < 0.01 for p in ps) <= int(binom.isf(1e-6, NULL_MODELS, 0.01)) + 1
    assert DEFAULT_P_THRESHOLD == record.threshold


def test_null_is_exact_over_many_keys_on_a_fixed_model(unrelated):
    """The labels are what is random: 80 marks (independent keys) against 3 fixed unrelated models;
    at a = 0.05 rejections are at most Binomial(240, 0.05) in law (bound: its 1 - 1e-9 quantile)."""
    template = _mlp(5)
    ps = []
    for _ in range(80):
        key = generate_master_key()
        _, record = make_regularizer({"method": "trigger", "triggers": 64, "patterns": 16}, template, key,
                                     data=X[TRAIN][:64])
        inputs, labels, which = verification_set(record, key)
        for m in unrelated[:3]:
            ps.append(verify_keyed(model_predictor(m)(inputs), labels, which, record).p_value)
    assert sum(p <= 0.05 for p in ps) <= binom.ppf(1 - 1e-9, len(ps), 0.05)
    assert not any(p < DEFAULT_P_THRESHOLD for p in ps)


def test_keyed_design_errors_name_the_field():
    key = generate_master_key()
    with pytest.raises(InputError, match="keyed-pattern needs inputs"):
        make_regularizer({"method": "trigger", "design": "keyed-pattern"}, _mlp(0), key)
    with pytest.raises(InputError, match="watermark.design"):
        make_regularizer({"method": "trigger", "design": "magic"}, _mlp(0), key, data=X[:200])
    with pytest.raises(InputError, match="base inputs"):
        make_regularizer({"method": "trigger"}, _mlp(0), key, data=X[:20])
    with pytest.raises(InputError, match="watermark.patterns"):
        make_regularizer({"method": "trigger", "design": "noise", "patterns": 8}, _mlp(0), key)
