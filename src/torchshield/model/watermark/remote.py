"""Black-box verification against a model served elsewhere: the torchshield serving API.

``POST {url}/v1/models/{name}/predict`` with an ``Authorization: Bearer <api key>`` header
answers ``{"outputs": ..., "predictions": [...]}``; only the predicted classes are used. The
request body takes the form the serving API defines for the model's input kind
(``serve/inputs.py``):

- token ids (a text model; the record's ``input_dtype`` is int64): ``{"input_ids": [[...], ...]}``,
  integers, the field a token model accepts besides raw ``text``;
- anything else: ``{"inputs": [...]}``, every float32 value written in its shortest decimal form
  that reads back as the same float32 (exact, and about half the bytes of Python's float64
  repr: 1.60 MB instead of 3.05 MB for one 3 x 224 x 224 input);
- images (``N x C x H x W``, C of 1 or 3, values in ``[0, 1]``) whose single ``inputs`` form the
  server refuses as too large: ``{"images": [base64 PNG, ...]}``. The server reads a PNG as
  ``uint8 / 255`` in pixel units, exactly what ``inputs`` carry, and applies the same
  normalisation to both, so this is the same query rounded to 8 bits (at most 1/510 per value;
  about 0.2 MB per 3 x 224 x 224 image). The rounding can only cost matches on a marked model; it
  cannot make an unrelated model answer the secret labels, so the p-value's null stays exact.

A server refuses a body over its limit (HTTP 413; ``torchshield serve --body-limit``, 1 MiB by
default). A refused request is split in halves and re-sent, and later requests keep the size that
passed: ``--batch-size`` is an upper bound, never a way to fail. Each input is encoded once, and
re-used by the smaller requests. Only a single input refused on its own, in its most compact
form, is an error, which names the fix.

A server that rate-limits the key (HTTP 429) is waited for, ``Retry-After`` seconds when it says
so, else with exponential back-off, within a total budget of waiting per verification; past the
budget the error names the rate limit and its fixes. A 503 that says ``Retry-After`` (the serving
API while its database is briefly away) is waited for the same way, within the same budget. Every other refusal is reported with the
server's own reason (one line, at most 200 characters). The API key is sent in the header only
and never appears in an error message.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torchshield.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    import torch

    from torchshield.model.watermark.trigger import Predictor

__all__ = ["endpoint_predictor"]

RATE_LIMIT_WAIT = 60.0  # seconds one verification may spend waiting out HTTP 429, in total
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 8.0  # seconds, when a 429 carries no Retry-After
REASON_CHARS = 200  # of the server's own message in an error
BODY_LIMIT_HINT = ("raise the server's body limit (torchshield serve --body-limit BYTES), "
                   "or verify a copy of the bundle locally")


def endpoint_predictor(url: str, model: str, api_key: str, *, timeout: float = 30.0,
                       input_shape: Sequence[int] | None = None, transport: Any = None,
                       sleep: Callable[[float], None] = time.sleep,
                       rate_limit_wait: float = RATE_LIMIT_WAIT) -> Predictor:
    """A predictor that queries a serving endpoint.

    ``transport`` lets tests plug in httpx's mock; ``sleep`` (``time.sleep``) lets them see the
    waits on HTTP 429 without waiting; ``rate_limit_wait`` bounds the total wait."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - the serve extra brings it
        raise MissingDependencyError("httpx", "serve") from None
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--endpoint {_shown(url)!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8000")
    client = httpx.Client(timeout=timeout, transport=transport,
                          headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    endpoint = _Endpoint(client, url, model, api_key, timeout=timeout, sleep=sleep, rate_limit_wait=rate_limit_wait)
    shape = tuple(input_shape) if input_shape else None

    def predict(inputs: torch.Tensor) -> list[int]:
        if shape is not None and math.prod(shape) != inputs[0].numel():
            raise InputError(f"--input-shape {','.join(map(str, shape))} holds {math.prod(shape)} values, but each "
                             f"trigger input has {inputs[0].numel()} (shape {list(inputs.shape[1:])})",
                             hint="give the shape the served model takes, with the same number of values")
        return endpoint.predict(inputs.reshape(len(inputs), *shape) if shape else inputs)

    return predict


class _Endpoint:
    """One serving endpoint and what verification learnt about it: the most inputs per request
    that passed its body limit, whether images go as PNG, and the time spent waiting on 429."""

    def __init__(self, client: Any, url: str, model: str, api_key: str, *, timeout: float,
                 sleep: Callable[[float], None], rate_limit_wait: float) -> None:
        self.client, self.url, self.model, self.api_key = client, _shown(url), model, api_key
        self.target = f"{url.rstrip('/')}/v1/models/{model}/predict"
        self.timeout, self.sleep, self.rate_limit_wait = timeout, sleep, rate_limit_wait
        self.fits = 0  # the largest request size accepted after a 413 (0: none refused yet)
        self.as_png = False  # one input's JSON was refused as too large: images go as PNG
        self.png_passed = False  # the server answered a PNG request
        self.waited = 0.0

    def predict(self, batch: torch.Tensor) -> list[int]:
        bodies = _Bodies(batch)
        out: list[int] = []
        start = 0
        while start < len(batch):
            size = min(len(batch) - start, self.fits or len(batch))
            response = self._post(bodies.body(start, size, png=self.as_png and bodies.png_ok))
            if response.status_code == 413:
                self._shrink(size, bodies)
                continue
            if response.status_code == 422 and self.as_png and bodies.png_ok and not self.png_passed:
                raise InputError(f"the endpoint {self.url} refuses even one trigger input as too large (HTTP 413) "
                                 f"and does not take it as a PNG image (HTTP 422: "
                                 f"{_reason(response, self.api_key)})", hint=BODY_LIMIT_HINT)
            out.extend(self._predictions(response))
            self.png_passed = self.png_passed or self.as_png
            start += size
        return out

    def _shrink(self, size: int, bodies: _Bodies) -> None:
        """After a 413: half the request, or the same inputs as PNG, or an error naming the fix."""
        if size > 1:
            self.fits = size // 2
            return
        if not self.as_png and bodies.png_ok:
            self.as_png, self.fits = True, 0  # the compact form: try the whole batch again
            return
        form = " even as a PNG image" if self.as_png and bodies.png_ok else ""
        raise InputError(f"the endpoint {self.url} refuses even one trigger input as too large (HTTP 413){form}",
                         hint=BODY_LIMIT_HINT)

    def _post(self, body: bytes) -> Any:
        """Send ``body``; on 429, or a 503 that carries ``Retry-After`` (the serving API's answer while
        its database is briefly away), wait (``Retry-After``, else back-off) and send it again."""
        backoff = FIRST_BACKOFF
        while True:
            response = self._send(body)
            wait = _retry_after(response)
            if response.status_code != 429 and not (response.status_code == 503 and wait is not None):
                return response
            if wait is None:
                wait, backoff = backoff, min(2 * backoff, MAX_BACKOFF)
            if self.waited + wait > self.rate_limit_wait:
                waited = (f"after {self.waited:.0f} s of waiting (next wait {wait:g} s, budget "
                          f"{self.rate_limit_wait:g} s)")
                if response.status_code == 503:
                    raise InputError(f"the endpoint {self.url} stayed unavailable (HTTP 503: "
                                     f"{_reason(response, self.api_key)}) {waited}",
                                     hint="check the service and its database, then verify again")
                raise InputError(
                    f"the endpoint {self.url} keeps refusing requests over its rate limit (HTTP 429) {waited}",
                    hint="wait longer (--max-wait SECONDS), raise the key's or the server's rate (torchshield "
                         "serve --rate/--burst), or its --body-limit so that fewer requests are needed")
            self.sleep(wait)
            self.waited += wait

    def _send(self, body: bytes) -> Any:
        import httpx

        try:
            return self.client.post(self.target, content=body)
        except httpx.TimeoutException:
            raise InputError(f"the endpoint {self.url} did not answer within {self.timeout:g} s",
                             hint="check that the service is up, or raise --timeout") from None
        except httpx.HTTPError as exc:
            raise InputError(f"cannot reach the endpoint {self.url} ({type(exc).__name__})",
                             hint="check the URL and that the service is running") from None

    def _predictions(self, response: Any) -> list[int]:
        status = response.status_code
        if status in (401, 403):
            raise InputError(f"the endpoint {self.url} refused the API key (HTTP {status})",
                             hint=f"pass an --api-key allowed to predict on model {self.model!r}")
        if status == 404:
            raise InputError(f"the endpoint {self.url} has no model {self.model!r} (HTTP 404)", hint="check --model")
        if status >= 400:
            hint = ("the service failed; retry later, or see its log" if status >= 500 else
                    f"compare the record's trigger inputs with the served model's input spec (GET "
                    f"{self.url.rstrip('/')}/v1/models/{self.model}); --input-shape reshapes the triggers")
            raise InputError(f"the endpoint {self.url} rejected the trigger queries (HTTP {status}: "
                             f"{_reason(response, self.api_key)})", hint=hint)
        try:
            preds = response.json()["predictions"]
            return [int(p) for p in preds]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"the endpoint {self.url} did not answer with a 'predictions' list",
                             hint="is it a torchshield serving API?") from None


class _Bodies:
    """Request bodies for slices of one batch; each input is encoded once per form."""

    def __init__(self, batch: torch.Tensor) -> None:
        self.batch = batch
        self.field = "inputs" if batch.is_floating_point() else "input_ids"
        self.png_ok = (batch.is_floating_point() and batch.dim() == 4 and batch.shape[1] in (1, 3)
                       and len(batch) > 0 and float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0)
        self._items: dict[tuple[str, int], str] = {}

    def body(self, start: int, size: int, *, png: bool) -> bytes:
        field = "images" if png else self.field
        items = ",".join(self._item(field, i) for i in range(start, start + size))
        return f'{{"{field}":[{items}]}}'.encode("ascii")

    def _item(self, field: str, i: int) -> str:
        key = (field, i)
        if key not in self._items:
            x = self.batch[i]
            self._items[key] = (json.dumps(x.tolist(), separators=(",", ":")) if field == "input_ids"
                                else f'"{_png(x)}"' if field == "images" else _float32_json(x))
        return self._items[key]


def _float32_json(x: torch.Tensor) -> str:
    """``x`` as nested JSON lists, each value in the shortest decimal that reads back as the same
    float32 (what the server converts it to): exact, in about half of Python's float64 repr."""
    import numpy as np

    a = x.detach().cpu().numpy().astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InputError("the trigger inputs hold NaN or infinite values", hint="is the record intact?")
    if a.ndim == 0:
        return str(a[()])
    rows = [str(v) for v in a.ravel()]  # numpy's str of a float32: its shortest round-trip form
    for dim in reversed(a.shape):
        rows = ["[" + ",".join(rows[j:j + dim]) + "]" for j in range(0, len(rows), dim)]
    return rows[0]


def _png(x: torch.Tensor) -> str:
    """One ``C x H x W`` image in ``[0, 1]`` (C of 1 or 3) as base64 PNG of its 8-bit pixels."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    pixels = np.clip(np.rint(x.detach().cpu().numpy() * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels[0], "L") if pixels.shape[0] == 1 else Image.fromarray(pixels.transpose(1, 2, 0),
                                                                                        "RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)  # trigger noise does not compress: save the time
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _shown(url: str) -> str:
    """``url`` as messages may print it: a password in it (``http://user:pw@host``) masked."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _retry_after(response: Any) -> float | None:
    """The seconds a 429 asks to wait (``Retry-After: <seconds>``), or None if it does not say."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:  # an HTTP date: back off instead
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _reason(response: Any, api_key: str) -> str:
    """The server's own reason for a refusal, on one line, without the API key."""
    try:
        doc = response.json()
    except ValueError:
        doc = response.text
    reason: Any = doc
    if isinstance(doc, dict):
        err = doc.get("error")
        reason = (err.get("message") if isinstance(err, dict) else err) or doc.get("detail") or doc.get("message")
        if isinstance(reason, list) and reason and isinstance(reason[0], dict):  # FastAPI's validation detail
            first = reason[0]
            reason = f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', '')}"
    text = " ".join(str(reason or "no reason given").split())
    if api_key:
        text = text.replace(api_key, "<api key>")
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."
