"""Trigger-set watermark: trained in, verified by querying (local callable and HTTP endpoint)."""

from __future__ import annotations

import copy
import json

import httpx
import pytest
import torch
from torch import nn
from watermark_digits import HELD, TRAIN
from watermark_digits import mlp as _mlp
from watermark_digits import train as _train

from torchshield.crypto.keys import generate_master_key
from torchshield.errors import InputError, WrongKeyError
from torchshield.model.watermark import TriggerSet, make_regularizer, model_predictor, verify_trigger
from torchshield.model.watermark.remote import endpoint_predictor
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD


@pytest.fixture(scope="module")
def marked():
    key = generate_master_key()
    model = _mlp(5)
    regs, record = make_regularizer({"method": "trigger", "triggers": 60, "strength": 0.5}, model, key)
    _train(model, TRAIN, 15, regs)
    return model, record, key


def test_trigger_mark_present_and_survives_fine_tuning(marked):
    model, record, key = marked
    verdict = verify_trigger(model_predictor(model), record, key)
    assert verdict.present and verdict.p_value < 1e-6 and verdict.agreement >= 0.75
    tuned = _train(copy.deepcopy(model), HELD, 5)
    assert verify_trigger(model_predictor(tuned), record, key).present


@pytest.fixture(scope="module")
def independent():
    return [_train(_mlp(seed), TRAIN, 3) for seed in (21, 22, 23)]


def test_independent_models_do_not_answer_the_triggers(marked, independent):
    _, record, key = marked
    for model in independent:
        verdict = verify_trigger(model_predictor(model), record, key)
        assert not verdict.present and verdict.p_value >= DEFAULT_P_THRESHOLD


def test_false_positive_rate_of_the_trigger_test_is_within_its_p_value(independent):
    """The null behind every verdict: for a model not trained on our triggers, P[p <= a] <= a.

    150 marks (independent keys) x 3 independent models = 450 verdicts at a = 0.01: the number of
    rejections is at most Binomial(900, 0.01); the assertion's bound is that distribution's
    1 - 1e-9 quantile, so an honest test fails with probability below 1e-9 (and the keys are seeded)."""
    from scipy.stats import binom

    template = _mlp(5)
    verdicts = []
    for _ in range(150):
        key = generate_master_key()
        _, record = make_regularizer({"method": "trigger", "triggers": 60}, template, key)
        verdicts += [verify_trigger(model_predictor(m), record, key).p_value for m in independent]
    rejections = sum(p <= 0.01 for p in verdicts)
    assert rejections <= binom.ppf(1 - 1e-9, len(verdicts), 0.01)
    assert not any(p < DEFAULT_P_THRESHOLD for p in verdicts)


def test_triggers_come_from_the_sealed_secret_and_the_record_stays_small(marked):
    _, record, key = marked
    secret = record.open_secret(key)
    a, b = TriggerSet.from_record(record, secret), TriggerSet.from_record(record, secret)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert a.inputs.shape == (60, 64) and 0.0 <= float(a.inputs.min()) and float(a.inputs.max()) <= 1.0
    assert len(set(a.labels.tolist())) > 5
    assert len(json.dumps(record.to_dict())) < 1500
    with pytest.raises(WrongKeyError):
        verify_trigger(model_predictor(_mlp(0)), record, generate_master_key())


def _mock_service(model: nn.Module, api_key: str, seen: list[int]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {api_key}":
            return httpx.Response(401, json={"detail": "bad key"})
        if request.url.path != "/v1/models/digits/predict":
            return httpx.Response(404, json={"detail": "no model"})
        inputs = torch.tensor(json.loads(request.content)["inputs"])
        seen.append(len(inputs))
        with torch.no_grad():
            out = model(inputs.reshape(len(inputs), -1))
        return httpx.Response(200, json={"outputs": out.tolist(), "predictions": out.argmax(1).tolist()})

    return httpx.MockTransport(handler)


def test_black_box_verification_over_http(marked):
    model, record, key = marked
    seen: list[int] = []
    predict = endpoint_predictor("http://model.test", "digits", "k-123", transport=_mock_service(model, "k-123", seen),
                                 input_shape=[1, 8, 8])
    verdict = verify_trigger(predict, record, key, batch_size=25)
    assert verdict.present and seen == [25, 25, 10]


@pytest.mark.parametrize("api_key, name, message", [("wrong", "digits", "refused the API key"),
                                                    ("k-123", "other", "no model 'other'")])
def test_endpoint_errors_are_input_errors_without_the_key(marked, api_key, name, message):
    model, record, key = marked
    predict = endpoint_predictor("http://model.test", name, api_key, transport=_mock_service(model, "k-123", []))
    with pytest.raises(InputError, match=message) as info:
        verify_trigger(predict, record, key)
    assert api_key not in str(info.value) or api_key == "k-123"


def test_unreachable_and_slow_endpoints_are_input_errors(marked):
    _, record, key = marked

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    predict = endpoint_predictor("http://model.test", "digits", "k", transport=httpx.MockTransport(timeout))
    with pytest.raises(InputError, match="did not answer"):
        verify_trigger(predict, record, key)
    refused = endpoint_predictor("http://127.0.0.1:9", "digits", "k", timeout=2)
    with pytest.raises(InputError, match="cannot reach"):
        verify_trigger(refused, record, key)
    with pytest.raises(InputError, match="not an http"):
        endpoint_predictor("ftp://x", "digits", "k")
