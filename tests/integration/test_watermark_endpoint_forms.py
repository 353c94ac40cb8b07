"""Black-box verification in every input form the real serving API takes, on a loopback uvicorn:
token ids for a text model, PNG images for triggers too large as JSON, a rate-limited key waited
for, and a refusal reported with the server's own reason. Each endpoint answer is compared with
the same model run here on what the server was sent."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import torch
from serve_harness import running

from torchshield.cli.model_watermark_cmd import ABSENT_MEANS
from torchshield.model.watermark import (
    TriggerSet,
    make_regularizer,
    model_predictor,
    verify_trigger,
    write_record,
)
from torchshield.model.watermark.remote import endpoint_predictor

pytestmark = pytest.mark.integration

DEFAULT_BODY_LIMIT = 1 << 20  # torchshield serve --body-limit's default
CNN = {"type": "cnn", "channels": [4], "pool": True}


class Recording(httpx.HTTPTransport):
    """A real HTTP transport that notes each request's body form and size, and each answer."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, int, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        field = request.content[2:request.content.index(b'"', 2)].decode()
        self.sent.append((field, len(request.content), response.status_code))
        return response


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An MLP on 64 inputs and a CNN on 3 x 224 x 224 images behind a default server (1 MiB body
    limit), each with a trigger record of the owner's (untrained: the tests compare answers)."""
    import torchshield
    from torchshield.crypto.keys import generate_master_key, write_key_file
    from torchshield.nn.zoo import build_model
    from torchshield.serve.http import create_app
    from torchshield.serve.service import ServeConfig, Service

    tmp = tmp_path_factory.mktemp("wm-forms")
    owner = write_key_file(tmp / "owner.key")
    models, bundles = {}, []
    for name, arch, shape in (("digits", {"type": "mlp", "hidden": [16]}, [64]), ("big", CNN, [3, 224, 224])):
        torch.manual_seed(7)
        model = build_model(arch, in_shape=shape, num_classes=10).eval()
        _, record = make_regularizer({"method": "trigger", "triggers": 20, "input_shape": shape}, model, owner)
        write_record(tmp / f"{name}.json", record)
        spec = {"shape": shape, "dtype": "float32", "min": 0.0, "max": 1.0}
        if name == "digits":  # a bundle described by its metadata only: its service takes "inputs" alone
            saved = torchshield.save(model, tmp / f"{name}.tsb", metadata={"name": name, "model": arch,
                                                                           "input": spec, "num_classes": 10})
        else:  # as `model protect --input-shape 3,224,224 --input-range 0,1` records it: an image model
            saved = torchshield.save(model, tmp / f"{name}.tsb", metadata={"name": name},
                                     architecture={"kind": "zoo", "spec": arch, "in_shape": shape, "num_classes": 10},
                                     preprocessing={"input": {"kind": "image", **spec},
                                                    "output": {"kind": "logits", "num_classes": 10}})
        bundles.append(str(saved))
        models[name] = (model, record)
    svc = Service.start(ServeConfig(db_url=f"sqlite:///{tmp / 'serve.db'}", bundles=tuple(bundles),
                                    allow_unsigned=True, rate_per_s=1000, burst=1000), master=generate_master_key())
    assert svc.config.body_limit == DEFAULT_BODY_LIMIT
    with running(create_app(svc)) as url:
        yield url, svc, models, owner, tmp
    svc.close()


def _cli(url, token, tmp, name, *extra):
    from torchshield.cli.app import run

    return run(["model", "watermark", "verify", "--endpoint", url, "--api-key", token, "--model", name,
                "--record", str(tmp / f"{name}.json"), "--key-file", str(tmp / "owner.key"), "--json", *extra])


def test_224_image_triggers_pass_a_default_server_as_png(served, capsys):
    """One 3 x 224 x 224 trigger is 1.6 MB even as compact JSON, over the default 1 MiB limit: the
    client falls back to PNG images (8-bit), and the server's answers are exactly the model's on
    those 8-bit pixels. Before the fix: exit 2, 'refuses even one trigger input'."""
    url, svc, models, owner, tmp = served
    model, record = models["big"]
    token = svc.keys.create(role="predictor").token
    transport = Recording()
    predict = endpoint_predictor(url, "big", token, transport=transport)
    triggers = TriggerSet.from_record(record, record.open_secret(owner))
    answered = predict(triggers.inputs)
    with torch.no_grad():
        expected = model(torch.round(triggers.inputs * 255) / 255).argmax(1).tolist()
    assert answered == expected
    fields = [f for f, _, _ in transport.sent]
    assert fields[0] == "inputs" and set(fields) == {"inputs", "images"}
    assert all(status == 413 for f, _, status in transport.sent if f == "inputs")  # JSON: never fits
    passed = [(n, status) for f, n, status in transport.sent if f == "images" and status == 200]
    assert passed and all(n <= DEFAULT_BODY_LIMIT for n, _ in passed) and len(passed) <= 4
    # the command line: a verdict (the untrained model has no mark), not exit 2
    assert _cli(url, token, tmp, "big") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 20 and doc["matches"] == sum(int(a == b) for a, b in zip(expected, triggers.labels.tolist()))


def test_small_float_triggers_stay_exact_json(served):
    """Triggers that fit as JSON are sent as JSON, never rounded to PNG: each float32 in its
    shortest exact form, under 60% of the bytes of Python's float64 repr (which it was before)."""
    url, svc, models, owner, _ = served
    model, record = models["digits"]
    transport = Recording()
    predict = endpoint_predictor(url, "digits", svc.keys.create(role="predictor").token, transport=transport)
    assert verify_trigger(predict, record, owner) == verify_trigger(model_predictor(model), record, owner)
    assert [f for f, _, _ in transport.sent] == ["inputs"]
    triggers = TriggerSet.from_record(record, record.open_secret(owner)).inputs
    assert transport.sent[0][1] < 0.6 * len(json.dumps({"inputs": triggers.tolist()}))


def test_a_rate_limited_key_is_waited_for_as_retry_after_says(served):
    """One trigger per request against a key allowed 3 requests at once: the 429s are waited out
    (the server's Retry-After, 1 s; the test's sleep waits 0.1 s, which refills the bucket at 40/s)
    and the verdict is the local one. Before the fix: exit 2, 'rejected ... (HTTP 429)'."""
    url, svc, models, owner, _ = served
    model, record = models["digits"]
    token = svc.keys.create(role="predictor", rate_per_s=40, burst=3).token
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(0.1)

    predict = endpoint_predictor(url, "digits", token, sleep=sleep)
    verdict = verify_trigger(predict, record, owner, batch_size=1)
    assert verdict == verify_trigger(model_predictor(model), record, owner)
    assert waits and set(waits) == {1.0}


def test_a_rate_limit_beyond_the_wait_budget_is_one_line_exit_2(served, capsys):
    url, svc, _, _, tmp = served
    token = svc.keys.create(role="predictor", rate_per_s=0.01, burst=1).token  # Retry-After: 100 s
    started = time.monotonic()
    assert _cli(url, token, tmp, "digits", "--batch-size", "5") == 2
    err = capsys.readouterr().err
    assert "rate limit (HTTP 429)" in err and "--rate/--burst" in err and "--body-limit" in err
    assert token not in err and "check --input-shape" not in err
    assert time.monotonic() - started < 30  # the 100 s wait is over budget: refused at once, not slept


def test_max_wait_sets_the_budget_for_rate_limits(served, capsys):
    """A key allowed one request per second: by default each 429's Retry-After (1 s) is waited for;
    --max-wait 0 refuses at the first one, naming the budget and the flag, and a negative budget is bad
    input."""
    url, svc, _, _, tmp = served
    token = svc.keys.create(role="predictor", rate_per_s=1, burst=1).token
    started = time.monotonic()
    assert _cli(url, token, tmp, "digits", "--batch-size", "5", "--max-wait", "0") == 2
    err = capsys.readouterr().err
    assert "rate limit (HTTP 429)" in err and "budget 0 s" in err and "--max-wait" in err
    assert time.monotonic() - started < 10
    assert _cli(url, token, tmp, "digits", "--max-wait", "-1") == 2
    assert "--max-wait" in capsys.readouterr().err


def test_a_refusal_carries_the_servers_reason(served, capsys):
    """Float triggers shaped for another model: the server's 422 reason, not a generic guess."""
    url, svc, _, _, tmp = served
    token = svc.keys.create(role="predictor").token
    assert _cli(url, token, tmp, "digits", "--input-shape", "2,32") == 2
    err = capsys.readouterr().err
    assert "(HTTP 422: each input must have shape [64], got [2, 32])" in err and token not in err


@pytest.fixture(scope="module")
def served_text(tmp_path_factory):
    """A BERT-style text classifier as users bring it (tokenizer bundled), served; a token-id
    trigger record for it."""
    pytest.importorskip("transformers")
    import byom_models as bm
    import transformers

    from torchshield.crypto.keys import generate_master_key, write_key_file
    from torchshield.model.loading import protect_model
    from torchshield.model.watermark.inputs import TriggerInputs
    from torchshield.serve.http import create_app
    from torchshield.serve.service import ServeConfig, Service

    tmp = tmp_path_factory.mktemp("wm-text")
    owner = write_key_file(tmp / "owner.key")
    bm.tiny_bert(tmp / "bert")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp / "bert").eval()
    vocab = model.config.vocab_size
    inputs = TriggerInputs((12,), 0.0, float(vocab - 1), tokens=True)
    _, record = make_regularizer({"method": "trigger", "triggers": 30}, model, owner, inputs=inputs)
    write_record(tmp / "bert.json", record)
    protect_model(tmp / "bert", tmp / "bert.tsb")
    svc = Service.start(ServeConfig(db_url=f"sqlite:///{tmp / 'serve.db'}", bundles=(str(tmp / "bert.tsb"),),
                                    allow_unsigned=True, rate_per_s=1000, burst=1000), master=generate_master_key())
    with running(create_app(svc)) as url:
        yield url, svc.keys.create(role="predictor").token, model, record, owner, tmp
    svc.close()


def test_a_text_model_is_asked_with_token_ids(served_text, capsys):
    """Before the fix: HTTP 422 'inputs: is not a known field; this model takes one of input_ids'."""
    from torchshield.model.watermark.inputs import logits_module

    url, token, model, record, owner, tmp = served_text
    transport = Recording()
    triggers = TriggerSet.from_record(record, record.open_secret(owner))
    assert triggers.inputs.dtype == torch.long
    answered = endpoint_predictor(url, "bert", token, transport=transport)(triggers.inputs)
    assert answered == model_predictor(logits_module(model))(triggers.inputs)
    assert [f for f, _, _ in transport.sent] == ["input_ids"]
    local = verify_trigger(model_predictor(logits_module(model)), record, owner)
    assert _cli(url, token, tmp, "bert") == (0 if local.present else 1)
    expected = local.to_dict() | ({} if local.present else {"note": ABSENT_MEANS})
    assert json.loads(capsys.readouterr().out) == expected
