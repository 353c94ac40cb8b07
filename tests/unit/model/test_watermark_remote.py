"""The endpoint client's protocol rules, against httpx's mock transport (the real serving API is
exercised in tests/integration/test_watermark_endpoint*.py): waits on HTTP 429, the server's reason
on a refusal, the request forms."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

from torchshield.errors import InputError
from torchshield.model.watermark.remote import FIRST_BACKOFF, MAX_BACKOFF, endpoint_predictor

KEY = "tsk_secret-api-key-123"


def _server(answers: list[httpx.Response], seen: list[dict]) -> httpx.MockTransport:
    """Answers in order (the last one repeats); the bodies it got go to ``seen``."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return httpx.MockTransport(handler)


def _ok(n: int) -> httpx.Response:
    return httpx.Response(200, json={"outputs": [], "predictions": [1] * n})


def test_429_without_retry_after_backs_off_exponentially():
    waits: list[float] = []
    seen: list[dict] = []
    predict = endpoint_predictor("http://m.test", "m", KEY, sleep=waits.append,
                                 transport=_server([httpx.Response(429)] * 3 + [_ok(2)], seen))
    assert predict(torch.zeros(2, 4)) == [1, 1]
    assert waits == [FIRST_BACKOFF, 2 * FIRST_BACKOFF, 4 * FIRST_BACKOFF] and len(seen) == 4
    assert seen[0] == seen[-1]  # the same request, sent again


def test_429_honours_retry_after():
    waits: list[float] = []
    limited = httpx.Response(429, headers={"Retry-After": "3"})
    predict = endpoint_predictor("http://m.test", "m", KEY, sleep=waits.append,
                                 transport=_server([limited, limited, _ok(1)], []))
    assert predict(torch.zeros(1, 4)) == [1]
    assert waits == [3.0, 3.0]


def test_429_past_the_wait_budget_is_an_input_error_naming_the_rate_limit():
    waits: list[float] = []
    predict = endpoint_predictor("http://m.test", "m", KEY, sleep=waits.append, rate_limit_wait=20,
                                 transport=_server([httpx.Response(429)], []))
    with pytest.raises(InputError, match=r"rate limit \(HTTP 429\)") as info:
        predict(torch.zeros(1, 4))
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0] and max(waits) == MAX_BACKOFF and sum(waits) <= 20
    message = str(info.value)
    assert "--rate/--burst" in message and "--body-limit" in message and "\n" not in message
    assert KEY not in message and "--input-shape" not in message


def test_503_with_retry_after_is_waited_for_and_without_it_is_an_error():
    waits: list[float] = []
    down = httpx.Response(503, headers={"Retry-After": "1"},
                          json={"error": {"code": "unavailable", "message": "the service database is unavailable"}})
    predict = endpoint_predictor("http://m.test", "m", KEY, sleep=waits.append,
                                 transport=_server([down, down, _ok(1)], []))
    assert predict(torch.zeros(1, 4)) == [1] and waits == [1.0, 1.0]
    predict = endpoint_predictor("http://m.test", "m", KEY, sleep=waits.append, rate_limit_wait=2.5,
                                 transport=_server([down], []))
    with pytest.raises(InputError, match=r"stayed unavailable \(HTTP 503: the service database is unavailable\)"):
        predict(torch.zeros(1, 4))
    waits.clear()
    predict = endpoint_predictor("http://m.test", "m", KEY, sleep=waits.append,
                                 transport=_server([httpx.Response(503, json={"detail": "broken"})], []))
    with pytest.raises(InputError, match=r"HTTP 503: broken"):  # no Retry-After: the server did not say retry
        predict(torch.zeros(1, 4))
    assert waits == []


@pytest.mark.parametrize("body, reason", [
    ({"error": {"code": "invalid_input", "message": "input_ids[0][3]: token id\nout of vocabulary [0, 5)"}},
     "(HTTP 422: input_ids[0][3]: token id out of vocabulary [0, 5))"),
    ({"detail": [{"loc": ["body", "inputs"], "msg": "field required", "type": "missing"}]},
     "(HTTP 422: body.inputs: field required)"),
    ({"detail": "unsupported media type"}, "(HTTP 415: unsupported media type)"),
])
def test_a_refusal_carries_the_servers_own_reason(body, reason):
    status = 415 if "media" in json.dumps(body) else 422
    predict = endpoint_predictor("http://m.test", "m", KEY, transport=_server([httpx.Response(status, json=body)], []))
    with pytest.raises(InputError) as info:
        predict(torch.zeros(1, 4))
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_the_reason_is_cut_to_one_short_line_without_the_key():
    echoed = {"error": {"message": f"key {KEY} may not\r\nask this: " + "x" * 1000}}
    predict = endpoint_predictor("http://m.test", "m", KEY, transport=_server([httpx.Response(422, json=echoed)], []))
    with pytest.raises(InputError) as info:
        predict(torch.zeros(1, 4))
    message = str(info.value)
    assert KEY not in message and "key <api key> may not ask this: xxx" in message and "\n" not in message
    reason = message.split("(HTTP 422: ", 1)[1].split(")", 1)[0]
    assert len(reason) <= 200 and reason.endswith("...")


def test_token_ids_go_as_integer_input_ids_and_floats_as_exact_float32():
    seen: list[dict] = []
    predict = endpoint_predictor("http://m.test", "m", KEY, transport=_server([_ok(2)], seen))
    ids = torch.tensor([[2, 5, 999], [0, 1, 7]], dtype=torch.long)
    predict(ids)
    assert seen[-1] == {"input_ids": [[2, 5, 999], [0, 1, 7]]}
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    predict(x)
    sent = np.asarray(seen[-1]["inputs"], dtype=np.float32)
    assert set(seen[-1]) == {"inputs"} and np.array_equal(sent, x.numpy())


def test_an_image_refused_alone_goes_as_png_and_a_server_without_images_says_so():
    """One JSON image over the limit: the PNG form follows; if that is refused too (a server that
    takes "inputs" only), the error names the body limit and the server's reason."""
    seen: list[dict] = []
    answers = [httpx.Response(413), httpx.Response(422, json={"error": {"message": "images: is not a known field"}})]
    predict = endpoint_predictor("http://m.test", "m", KEY, transport=_server(answers, seen))
    with pytest.raises(InputError, match=r"too large \(HTTP 413\) and does not take it as a PNG image "
                                         r"\(HTTP 422: images: is not a known field\).*--body-limit"):
        predict(torch.rand(1, 3, 8, 8))
    assert [set(b) for b in seen] == [{"inputs"}, {"images"}]
