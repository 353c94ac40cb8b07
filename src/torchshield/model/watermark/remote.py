"""Black-box verification against a model served elsewhere: the torchshield serving API.

``POST {url}/v1/models/{name}/predict`` with ``{"inputs": [[...], ...]}`` and an
``Authorization: Bearer <api key>`` header answers ``{"outputs": ..., "predictions": [...]}``.
Only the predicted classes are used. The API key is sent in the header only and never appears
in an error message.

A server refuses a body over its limit (HTTP 413; ``torchshield serve --body-limit``, 1 MiB by
default), and image triggers reach it quickly (one 3 x 224 x 224 input is about 3 MB of JSON). So
a refused request is split in halves and re-sent, and later requests keep the size that passed:
``--batch-size`` is an upper bound, never a way to fail. Only a single input refused on its own
is an error, which names the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torchshield.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    import torch

    from torchshield.model.watermark.trigger import Predictor

__all__ = ["endpoint_predictor"]


def endpoint_predictor(url: str, model: str, api_key: str, *, timeout: float = 30.0,
                       input_shape: Sequence[int] | None = None, transport: Any = None) -> Predictor:
    """A predictor that queries a serving endpoint; ``transport`` lets tests plug in httpx's mock."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - the serve extra brings it
        raise MissingDependencyError("httpx", "serve") from None
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--endpoint {url!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8000")
    target = f"{url.rstrip('/')}/v1/models/{model}/predict"
    client = httpx.Client(timeout=timeout, transport=transport,
                          headers={"Authorization": f"Bearer {api_key}"})

    fits = [0]  # the largest request size the server has accepted after a 413 (0: none refused yet)

    def post(batch: torch.Tensor) -> Any:
        try:
            return client.post(target, json={"inputs": batch.tolist()})
        except httpx.TimeoutException:
            raise InputError(f"the endpoint {url} did not answer within {timeout:g} s",
                             hint="check that the service is up, or raise --timeout") from None
        except httpx.HTTPError as exc:
            raise InputError(f"cannot reach the endpoint {url} ({type(exc).__name__})",
                             hint="check the URL and that the service is running") from None

    def predict(inputs: torch.Tensor) -> list[int]:
        batch = inputs.reshape(len(inputs), *input_shape) if input_shape else inputs
        out: list[int] = []
        start = 0
        while start < len(batch):
            size = min(len(batch) - start, fits[0] or len(batch))
            response = post(batch[start:start + size])
            if response.status_code == 413:
                if size == 1:
                    raise InputError(f"the endpoint {url} refuses even one trigger input as too large (HTTP 413)",
                                     hint="raise the server's body limit (torchshield serve --body-limit BYTES), "
                                          "or verify a copy of the bundle locally")
                fits[0] = size // 2
                continue
            out.extend(_predictions(response, url, model))
            start += size
        return out

    return predict


def _predictions(response: Any, url: str, model: str) -> list[int]:
    if response.status_code in (401, 403):
        raise InputError(f"the endpoint {url} refused the API key (HTTP {response.status_code})",
                         hint=f"pass an --api-key allowed to predict on model {model!r}")
    if response.status_code == 404:
        raise InputError(f"the endpoint {url} has no model {model!r} (HTTP 404)", hint="check --model")
    if response.status_code >= 400:
        raise InputError(f"the endpoint {url} rejected the trigger queries (HTTP {response.status_code})",
                         hint="check --input-shape against the served model's input")
    try:
        preds = response.json()["predictions"]
        return [int(p) for p in preds]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"the endpoint {url} did not answer with a 'predictions' list",
                         hint="is it a torchshield serving API?") from None
