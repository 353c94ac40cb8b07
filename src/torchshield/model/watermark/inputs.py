"""What a trigger input looks like, read from the bundle's input spec (issue 18).

A trigger set is only evidence if the suspect can be asked with inputs of the kind it was built
for: an image model gets ``C x H x W`` float tensors inside the declared value range, a text
model gets integer token ids in ``[0, vocab)``. Before issue 18 the shape was guessed from the
first Linear layer (a BERT got ``[64]``-float noise, its hidden size); now the spec comes from the
bundle's ``preprocessing.input`` (written by ``model protect --input-shape/--input-range``, by
``torchshield train``, or derived from a Hugging Face config), and a bundle without one is refused
with the flags that add it.

:class:`TriggerInputs` also wraps a Hugging Face model so that ``model(x)`` returns logits
(:func:`logits_module`): the regularisers, the training loop and ``model_predictor`` then treat a
``BertForSequenceClassification`` like any classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchshield.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["TriggerInputs", "logits_module", "uniform_integers"]

DEFAULT_TOKEN_LENGTH = 32  # a token model's trigger length when neither the data nor the spec fixes one


@dataclass(frozen=True)
class TriggerInputs:
    """Shape, dtype and valid range of one model input. ``tokens``: integer ids in ``[low, high]``
    (``high`` = vocab - 1, inclusive); otherwise floats in ``[low, high]``."""

    shape: tuple[int, ...]
    low: float
    high: float
    tokens: bool = False

    @property
    def dtype(self) -> str:
        return "int64" if self.tokens else "float32"

    def params(self) -> dict[str, Any]:
        """The record's description (``input_shape``, ``low``, ``high``, ``input_dtype``)."""
        return {"input_shape": list(self.shape), "low": self.low, "high": self.high, "input_dtype": self.dtype}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None, *, where: str,
                  sequence_length: int | None = None) -> TriggerInputs:
        """Read ``preprocessing.input``; ``sequence_length`` (from the data) fixes a token input's length.

        Raises InputError (exit 2) naming what the bundle lacks and how to add it."""
        fix = (f"re-protect it with its input spec: torchshield model protect {where} --out OUT.tsb "
               "--input-shape C,H,W --input-range LO,HI")
        if not isinstance(spec, Mapping) or not spec:
            raise InputError(f"{where} declares no input spec (preprocessing.input): the trigger inputs' shape, "
                             "dtype and range are unknown", hint=fix)
        dtype = str(spec.get("dtype") or "float32")
        if spec.get("kind") == "tokens" or dtype.startswith(("int", "uint")):
            return cls._tokens(spec, where, sequence_length)
        shape = spec.get("shape")
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise InputError(f"{where}: preprocessing.input has no shape (one example's shape, e.g. [3, 32, 32])",
                             hint=fix)
        low, high = spec.get("min"), spec.get("max")
        if low is None or high is None:
            raise InputError(f"{where}: preprocessing.input has no valid range (min/max) for trigger values",
                             hint=fix)
        if not float(high) > float(low):
            raise InputError(f"{where}: preprocessing.input range [{low}, {high}] is empty")
        return cls(tuple(int(d) for d in shape), float(low), float(high))

    @classmethod
    def _tokens(cls, spec: Mapping[str, Any], where: str, sequence_length: int | None) -> TriggerInputs:
        high = spec.get("max")
        if high is None or int(high) < 1:
            raise InputError(f"{where}: the token input spec has no vocabulary bound (preprocessing.input.max = "
                             "vocab size - 1)", hint="re-protect the model from its Hugging Face directory "
                                                    "(config.json gives vocab_size)")
        shape = spec.get("shape")
        length = sequence_length or (int(shape[-1]) if shape else None)
        max_length = spec.get("max_length")
        if length is None:
            length = min(int(max_length), DEFAULT_TOKEN_LENGTH) if max_length else DEFAULT_TOKEN_LENGTH
        if max_length and length > int(max_length):
            raise InputError(f"{where}: sequences of {length} tokens exceed the model's max_length {max_length}")
        return cls((int(length),), float(spec.get("min") or 0), float(int(high)), tokens=True)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TriggerInputs:
        """The inputs a record describes (records before issue 18 have float inputs)."""
        return cls(tuple(int(d) for d in params["input_shape"]), float(params["low"]), float(params["high"]),
                   tokens=str(params.get("input_dtype", "float32")).startswith("int"))

    def check(self, x: torch.Tensor, what: str) -> None:
        """Refuse data that does not fit the spec (wrong shape, values out of range, ids that are not integers)."""
        if tuple(x.shape[1:]) != self.shape:
            raise InputError(f"{what} has examples of shape {list(x.shape[1:])}, the model's input spec says "
                             f"{list(self.shape)}")
        if self.tokens and len(x) and (float(x.min()) < self.low or float(x.max()) > self.high
                                       or bool((x != x.round()).any())):
            raise InputError(f"{what} is not token ids in [{int(self.low)}, {int(self.high)}]",
                             hint="pass the tokenised data (integer ids), not features")
        if not self.tokens and len(x) and (float(x.min()) < self.low or float(x.max()) > self.high):
            raise InputError(f"{what} has values in [{float(x.min()):g}, {float(x.max()):g}], outside the range "
                             f"[{self.low:g}, {self.high:g}] of the model's input spec",
                             hint="pass inputs as a client sends them (e.g. pixels in that range), or re-protect "
                                  "the model with its real --input-range")


def uniform_integers(stream: bytes, count: int, low: int, high: int) -> list[int] | None:
    """``count`` integers uniform on ``[low, high]`` by rejection sampling on 32-bit words of
    ``stream``; None when the stream ran short (ask for a longer one)."""
    import numpy as np

    span = high - low + 1
    limit = (2**32 // span) * span
    words = np.frombuffer(stream[: len(stream) // 4 * 4], dtype="<u4")
    kept = [low + int(v) % span for v in words if int(v) < limit]
    return kept[:count] if len(kept) >= count else None


def logits_module(model: nn.Module, *, normalization: Mapping[str, Any] | None = None) -> nn.Module:
    """``model`` as the service runs it, returning logits: itself, or a thin module that first
    applies the bundle's image ``normalization`` (``preprocessing.normalization``: triggers and
    data are pixels in the input spec's range, as a client sends them) and, for a Hugging Face
    model (its forward takes ``input_ids`` or ``pixel_values`` and returns an output object),
    passes the input by name and returns the logits. The wrapper holds the model as ``inner``:
    save ``wrapper.inner`` to keep the original names."""
    from torch import nn

    from torchshield.model.sources.records import normalize_pixels

    config = getattr(model, "config", None)
    hf = config is not None and hasattr(model, "main_input_name")
    norm = dict(normalization or {})
    if not hf and (norm.get("mean") is None or norm.get("std") is None):
        return model

    class AsServed(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.input_name = str(getattr(inner, "main_input_name", "input_ids")) if hf else ""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.input_name == "input_ids":
                x = x.long()
            elif x.is_floating_point() and x.dim() == 4:
                x = normalize_pixels(x, norm)
            if not self.input_name:
                return self.inner(x)
            out = self.inner(**{self.input_name: x})
            return out.logits if hasattr(out, "logits") else out[0]

    return AsServed(model)
