"""Inputs of any bundled model, per its recorded preprocessing (``preprocessing.input``):

- ``tokens`` (text models): ``{"text": ["...", ...]}`` tokenised here with the bundle's own
  tokenizer (``tokenizer.json``, read in memory with ``tokenizers``; padding and attention mask;
  at most the declared ``max_length`` tokens, longer text is refused, never cut), or
  ``{"input_ids": [[...], ...]}`` checked to be integers in ``[0, vocab)``;
- ``image``: ``{"inputs": N x C x H x W}`` in pixel units ``[0, 1]``, or ``{"images": [base64
  PNG/JPEG, ...]}`` decoded with Pillow after checking the encoded size and the pixel count the
  header declares (a decompression bomb is refused before any pixel is decoded); the image
  processor's normalisation is applied here, before the model;
- ``tensor``: ``{"inputs": [...]}`` of the recorded shape and bounds.

Causal LMs also generate (:meth:`ModelIO.generate`): greedy, at most ``max_new_tokens`` (capped
per model), within a wall-time budget, and never past the model's positions. Every refusal is an
:class:`~torchshield.serve.models.InvalidInput` (HTTP 422) naming the field."""

from __future__ import annotations

import base64
import binascii
import io as _io
import json
import time
from dataclasses import dataclass, field
from typing import Any

from torchshield.errors import FormatError, InputError

__all__ = ["InvalidInput", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "MAX_NEW_TOKENS", "MAX_TEXT_CHARS", "ModelIO", "TokenBatch",
           "model_io"]

MAX_TEXT_CHARS = 16384  # characters per text item, before tokenising
MAX_IMAGE_BYTES = 4 << 20  # encoded bytes per image
MAX_IMAGE_PIXELS = 1 << 24  # pixels an image header may declare (Pillow's bomb limit is ~89M)
MAX_NEW_TOKENS = 64  # per generate request, unless the bundle's serve.max_new_tokens says less/more
MAX_GENERATE_S = 10.0  # wall time of one generate request



class InvalidInput(InputError):
    """A request's inputs do not match the model's input spec (HTTP 422)."""


def _invalid(msg: str) -> Exception:
    return InvalidInput(msg)


@dataclass
class TokenBatch:
    """Token ids and their attention mask, padded to one length."""

    ids: Any
    mask: Any

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def numpy(self) -> Any:
        return self.ids.numpy()


@dataclass
class ModelIO:
    kind: str  # "tokens" | "image" | "tensor"
    shape: list[int] | None = None
    min: float | None = None
    max: float | None = None
    vocab: int = 0
    max_length: int | None = None
    causal: bool = False
    hf: bool = False
    tokenizer: Any = None
    pad_id: int = 0
    eos_id: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    max_text_chars: int = MAX_TEXT_CHARS
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_new_tokens: int = MAX_NEW_TOKENS
    max_generate_s: float = MAX_GENERATE_S
    input_names: list[str] = field(default_factory=list)

    # ---- description --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "tokens":
            d.update(accepts=["text", "input_ids"] if self.tokenizer is not None else ["input_ids"], dtype="int64",
                     min=0, max=self.vocab - 1, max_length=self.max_length, max_text_chars=self.max_text_chars)
        elif self.kind == "image":
            d.update(accepts=["inputs", "images"], shape=self.shape, min=self.min, max=self.max,
                     layout="NCHW", image_formats=["PNG", "JPEG"], max_image_bytes=self.max_image_bytes,
                     max_image_pixels=self.max_image_pixels)
        else:
            d.update(accepts=["inputs"], shape=self.shape, min=self.min, max=self.max)
        return d

    def generate_limits(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "max_seconds": self.max_generate_s,
                "max_length": self.max_length}

    # ---- validation ---------------------------------------------------------------------
    def validate(self, payload: Any, *, max_batch: int, texts: Any = None) -> Any:
        if not isinstance(payload, dict) or len(payload) != 1:
            raise _invalid(f"body must be a JSON object with exactly one field, one of {self.describe()['accepts']}")
        (field_name, value), = payload.items()
        if field_name not in self.describe()["accepts"]:
            raise _invalid(f"{field_name}: is not a known field; this model takes one of "
                           f"{', '.join(self.describe()['accepts'])}")
        if not isinstance(value, list) or not value:
            raise _invalid(f'"{field_name}" must be a non-empty list')
        if len(value) > max_batch:
            raise _invalid(f'"{field_name}" holds {len(value)} inputs; this model takes at most {max_batch}')
        if field_name == "text":
            return self.tokenize(value, texts=texts)
        if field_name == "input_ids":
            return self._ids(value)
        if field_name == "images":
            return self._images(value)
        return self._tensor(value)

    def tokenize(self, value: list[Any], *, texts: Any = None) -> TokenBatch:
        import torch

        for i, t in enumerate(value):
            if not isinstance(t, str):
                raise _invalid(f"text[{i}]: must be a string")
            if len(t) > self.max_text_chars:
                raise _invalid(f"text[{i}]: {len(t)} characters; this model takes at most {self.max_text_chars}")
        if texts is not None:
            value = list(texts(value))
        encs = self.tokenizer.encode_batch(value)
        rows = [e.ids for e in encs]
        for i, r in enumerate(rows):
            if not r:
                raise _invalid(f"text[{i}]: is empty after tokenising")
            if self.max_length and len(r) > self.max_length:
                raise _invalid(f"text[{i}]: {len(r)} tokens; this model takes at most {self.max_length} "
                               "(shorten the text)")
        return _pad(rows, self.pad_id, torch)

    def _ids(self, value: list[Any]) -> TokenBatch:
        import torch

        rows = []
        for i, row in enumerate(value):
            if not isinstance(row, list) or not row:
                raise _invalid(f"input_ids[{i}]: must be a non-empty list of token ids")
            for j, t in enumerate(row):
                if isinstance(t, bool) or not isinstance(t, int):
                    raise _invalid(f"input_ids[{i}][{j}]: token ids are integers, got {type(t).__name__}")
                if not 0 <= t < self.vocab:
                    raise _invalid(f"input_ids[{i}][{j}]: token id out of vocabulary [0, {self.vocab})")
            if self.max_length and len(row) > self.max_length:
                raise _invalid(f"input_ids[{i}]: {len(row)} tokens; this model takes at most {self.max_length}")
            rows.append(row)
        return _pad(rows, self.pad_id, torch)

    def _tensor(self, value: list[Any]) -> Any:
        import numpy as np
        import torch

        try:
            arr = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            raise _invalid(f'inputs: must be a list of arrays of shape {self.shape}') from None
        if arr.dtype.kind not in "iuf":
            raise _invalid(f"inputs: must hold numbers only, every input of shape {self.shape}")
        if self.shape and list(arr.shape[1:]) != list(self.shape):
            raise _invalid(f"inputs: each input must have shape {self.shape}, got {list(arr.shape[1:])}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise _invalid("inputs: contains NaN or infinite values")
        if self.min is not None and arr.min() < self.min:
            raise _invalid(f"inputs: values must be >= {self.min}")
        if self.max is not None and arr.max() > self.max:
            raise _invalid(f"inputs: values must be <= {self.max}")
        return torch.from_numpy(arr.astype(np.float32, copy=False))

    def _images(self, value: list[Any]) -> Any:
        import warnings

        import numpy as np
        import torch
        from PIL import Image

        if self.shape is None or len(self.shape) != 3:  # model_io gives image models a [C, H, W] shape
            raise _invalid("images: this model does not take images")
        c, h, w = self.shape
        out = []
        for i, item in enumerate(value):
            where = f"images[{i}]"
            if not isinstance(item, str):
                raise _invalid(f"{where}: must be a base64 string of a PNG or JPEG file")
            if len(item) > self.max_image_bytes * 4 // 3 + 4:
                raise _invalid(f"{where}: larger than {self.max_image_bytes} bytes encoded")
            try:
                data = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise _invalid(f"{where}: not valid base64") from None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    img: Image.Image = Image.open(_io.BytesIO(data), formats=["PNG", "JPEG"])  # reads the header only
                    width, height = img.size
                    if width * height > self.max_image_pixels:
                        raise _invalid(f"{where}: {width}x{height} pixels; at most {self.max_image_pixels} "
                                       "(decompression bomb?)")
                    img = img.convert("L" if c == 1 else "RGB")
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise _invalid(f"{where}: too many pixels (decompression bomb)") from None
            except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError):
                raise _invalid(f"{where}: not a readable PNG or JPEG image") from None
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            out.append(arr)
        return torch.from_numpy(np.stack(out))

    # ---- the model ----------------------------------------------------------------------
    def forward(self, module: Any, x: Any) -> Any:
        """Logits of ``module`` on a validated batch."""
        if isinstance(x, TokenBatch):
            y = module(input_ids=x.ids, attention_mask=x.mask) if self.hf else module(x.ids)
        else:
            from torchshield.model.sources.records import normalize_pixels  # torch: not at import

            x = normalize_pixels(x, {"mean": self.mean, "std": self.std})
            y = module(pixel_values=x) if self.hf and self.kind == "image" else module(x)
        logits = getattr(y, "logits", y)
        if self.causal:  # the next token after the last real token of each row
            import torch

            last = (x.mask.sum(dim=1) - 1) if isinstance(x, TokenBatch) else torch.full((logits.shape[0],),
                                                                                       logits.shape[1] - 1)
            logits = logits[torch.arange(logits.shape[0]), last]
        return logits

    def generate(self, module: Any, text: str, *, max_new_tokens: int) -> dict[str, Any]:
        """Greedy decoding of ``text``'s continuation; bounded in tokens, time and length."""

        if self.tokenizer is None:
            raise _invalid("text: this model has no bundled tokenizer")
        if max_new_tokens > self.max_new_tokens:
            raise _invalid(f"max_new_tokens: at most {self.max_new_tokens} for this model")
        batch = self.tokenize([text])
        ids = batch.ids
        room = (self.max_length - ids.shape[1]) if self.max_length else max_new_tokens
        if room < 1:
            raise _invalid(f"text: leaves no room to generate within {self.max_length} tokens")
        budget = min(max_new_tokens, room)
        limit = "max_new_tokens" if budget == max_new_tokens else "length"
        if self.hf and callable(getattr(module, "generate", None)):
            new, stopped = self._hf_generate(module, ids, budget, limit)
        else:
            new, stopped = self._greedy(module, ids, budget, limit)
        return {"text": self.tokenizer.decode(new, skip_special_tokens=True), "tokens": len(new),
                "stopped": stopped}

    def _hf_generate(self, module: Any, ids: Any, budget: int, limit: str) -> tuple[list[int], str]:
        """transformers' own ``generate`` (its KV cache), greedy, with ``max_time``."""
        import torch

        t = time.monotonic()
        with torch.inference_mode():
            seq = module.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget,
                                  min_new_tokens=0, do_sample=False, num_beams=1, max_time=self.max_generate_s,
                                  eos_token_id=self.eos_id, pad_token_id=self.pad_id if self.eos_id is None
                                  else self.eos_id)
        new = seq[0, ids.shape[1]:].tolist()
        if self.eos_id is not None and self.eos_id in new:
            return new[:new.index(self.eos_id)], "eos"
        if len(new) < budget and time.monotonic() - t >= self.max_generate_s:
            return new, "time"
        return new, limit

    def _greedy(self, module: Any, ids: Any, budget: int, limit: str) -> tuple[list[int], str]:
        """Greedy decoding by hand, for modules without ``generate`` (factory models)."""
        import torch

        deadline = time.monotonic() + self.max_generate_s
        new: list[int] = []
        with torch.inference_mode():
            for _ in range(budget):
                y = module(input_ids=ids, attention_mask=torch.ones_like(ids)) if self.hf else module(ids)
                nxt = int(getattr(y, "logits", y)[0, -1].argmax())
                if self.eos_id is not None and nxt == self.eos_id:
                    return new, "eos"
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]], dtype=ids.dtype)], dim=1)
                if time.monotonic() > deadline and len(new) < budget:
                    return new, "time"
        return new, limit


def _pad(rows: list[list[int]], pad_id: int, torch: Any) -> TokenBatch:
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), n), dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, :len(r)] = 1
    return TokenBatch(ids, mask)


def _tokenizer(files: dict[str, bytes], where: str) -> tuple[Any, int, int | None]:
    """The bundled ``tokenizer.json`` (read in memory, no file written) and its pad / eos ids."""
    raw = files.get("tokenizer.json")
    if raw is None:
        return None, 0, None
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - the hf extra installs it
        from torchshield.errors import MissingDependencyError

        raise MissingDependencyError("tokenizers", "hf") from None
    try:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - any parse failure: one line naming the file
        raise FormatError(f"{where}: its tokenizer.json cannot be read ({type(exc).__name__})") from None
    tok.no_truncation()
    tok.no_padding()
    conf: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            doc = json.loads(files.get(name) or b"{}")
        except ValueError:
            doc = {}
        if isinstance(doc, dict):
            conf.update(doc)

    def token_id(key: str) -> int | None:
        v = conf.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        return tok.token_to_id(v) if isinstance(v, str) else None

    eos = token_id("eos_token")
    pad = token_id("pad_token")
    return tok, pad if pad is not None else (eos if eos is not None else 0), eos


def model_io(pre: dict[str, Any], files: dict[str, bytes], serve: dict[str, Any], where: str) -> ModelIO:
    """How to feed the model a bundle's ``preprocessing`` describes; ``serve`` (metadata) may
    lower or raise the limits (``max_text_chars``, ``max_image_bytes``, ``max_image_pixels``,
    ``max_new_tokens``, ``max_generate_s``)."""
    inp = dict(pre.get("input") or {})
    out = dict(pre.get("output") or {})
    kind = str(inp.get("kind") or "tensor")
    limits: dict[str, Any] = {}  # int or float, each checked by its cast below
    for k, cast in (("max_text_chars", int), ("max_image_bytes", int), ("max_image_pixels", int),
                    ("max_new_tokens", int), ("max_generate_s", float)):
        if serve.get(k) is not None:
            try:
                limits[k] = cast(serve[k])
            except (TypeError, ValueError):
                raise FormatError(f"{where}: metadata serve.{k} is not a number") from None
    hf = "name" in inp or "names" in inp  # Hugging Face: keyword inputs, output objects
    if kind == "tokens":
        tok, pad, eos = _tokenizer(files, where)
        vocab = int(inp.get("max", -1)) + 1
        if vocab < 1:
            raise FormatError(f"{where}: preprocessing.input records no vocabulary size")
        return ModelIO("tokens", None, 0, vocab - 1, vocab=vocab, max_length=inp.get("max_length"),
                       causal=out.get("kind") == "causal-lm", hf=hf, tokenizer=tok, pad_id=pad, eos_id=eos,
                       **limits)
    shape = [int(v) for v in inp.get("shape") or []]
    if kind == "image":
        if len(shape) != 3:
            raise FormatError(f"{where}: preprocessing.input of an image model needs shape [C, H, W]")
        norm = pre.get("normalization") or {}
        return ModelIO("image", shape, inp.get("min"), inp.get("max"), hf=hf, mean=norm.get("mean"),
                       std=norm.get("std"), **limits)
    if not shape:
        raise FormatError(f"{where}: preprocessing records no input shape",
                          hint="protect it with --input-shape (and --input-range)")
    if len(shape) == 3 and kind == "tensor":  # an N x C x H x W model protected with --input-shape
        return ModelIO("image", shape, inp.get("min"), inp.get("max"), **limits)
    return ModelIO("tensor", shape, inp.get("min"), inp.get("max"), **limits)
