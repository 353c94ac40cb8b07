"""Black-box watermark (Adi et al. 2018): a secret trigger set the model learns to answer.

The triggers are out-of-distribution inputs (uniform noise over the data's range) with labels
drawn uniformly at random; both are expanded from the mark's 32-byte secret (SHAKE-256), so the
record stays a few hundred bytes however many triggers there are. Embedding adds the
cross-entropy on a few triggers to every training step; verification only needs prediction
access: query the suspect with the N triggers and count how many come back with the secret
label. An unrelated model agrees with each uniformly drawn label with probability 1/C
whatever it predicts, so the count is Binomial(N, 1/C) under "not our model".

What it proves: a model that answers our random labels on our random inputs far above chance
learnt them from us, and this works against a model served elsewhere behind an API. What it
does not prove: much after distillation into a new model on in-distribution data (the
triggers are off the data, so a student rarely inherits them: see docs/benchmarks.md); and
querying reveals the triggers to the suspect's operator, so each record should be verified
against one suspect before its triggers are considered spent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torchshield.errors import InputError
from torchshield.model.watermark.inputs import TriggerInputs, uniform_integers
from torchshield.model.watermark.record import WatermarkRecord, expand_secret, new_mark
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD, Verdict, decide

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchshield.crypto.keys import MasterKey

__all__ = ["Predictor", "TriggerRegularizer", "TriggerSet", "model_predictor", "new_trigger_mark",
           "verify_trigger"]

DEFAULT_TRIGGERS = 100
DEFAULT_TRIGGER_STRENGTH = 0.1
DEFAULT_PER_STEP = 16
DEFAULT_EVERY = 4

Predictor = Callable[["torch.Tensor"], Sequence[int]]
"""Anything that maps a batch of inputs to predicted class indices: a local model or an endpoint."""


@dataclass(frozen=True)
class TriggerSet:
    inputs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_record(cls, record: WatermarkRecord, secret: bytes) -> TriggerSet:
        import numpy as np
        import torch

        p = record.params
        if p.get("design", "noise") != "noise":
            raise InputError(f"the record is a {p.get('design')} trigger set; its inputs are sealed",
                             hint="use keyed.verification_set(record, key)")
        count, classes = int(p["triggers"]), int(p["num_classes"])
        spec = TriggerInputs.from_params(p)
        shape, low, high = list(spec.shape), spec.low, spec.high
        size = count * int(np.prod(shape))
        labels = np.frombuffer(expand_secret(secret, "trigger/labels", 4 * count), dtype="<u4") % classes
        if spec.tokens:  # token ids uniform on [low, high] exactly (rejection sampling)
            words, ids = 2 * size + 64, None
            while ids is None:
                ids = uniform_integers(expand_secret(secret, "trigger/token-inputs", 4 * words), size,
                                       int(low), int(high))
                words *= 2
            return cls(torch.tensor(ids, dtype=torch.long).reshape(count, *shape),
                       torch.from_numpy(labels.astype(np.int64)))
        raw = np.frombuffer(expand_secret(secret, "trigger/inputs", 4 * size), dtype="<u4")
        inputs = low + (high - low) * (raw.astype(np.float64) / 2.0**32)
        return cls(torch.from_numpy(inputs.astype(np.float32).reshape(count, *shape)),
                   torch.from_numpy(labels.astype(np.int64)))


class TriggerRegularizer:
    """``strength * CE(model(triggers), secret labels)`` on ``per_step`` triggers per call.

    A rotating window over the set, applied on one training step in ``every`` (with ``every``
    times the weight), keeps the extra cost small next to the batch while every trigger is
    still seen every ``every * N / per_step`` steps."""

    def __init__(self, triggers: TriggerSet, *, strength: float = DEFAULT_TRIGGER_STRENGTH,
                 per_step: int = DEFAULT_PER_STEP, every: int = DEFAULT_EVERY) -> None:
        self.triggers = triggers
        self.strength = strength
        self.per_step = max(1, min(per_step, len(triggers.labels)))
        self.every = max(1, int(every))
        self._cursor = 0
        self._calls = 0

    def __call__(self, model: nn.Module) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        self._calls += 1
        if (self._calls - 1) % self.every:
            return torch.zeros(())
        n = len(self.triggers.labels)
        idx = torch.arange(self._cursor, self._cursor + self.per_step) % n
        self._cursor = (self._cursor + self.per_step) % n
        device = next(model.parameters()).device
        out = model(self.triggers.inputs[idx].to(device))
        return (self.strength * self.every) * F.cross_entropy(out, self.triggers.labels[idx].to(device))


def _infer_io(model: nn.Module) -> tuple[list[int] | None, int | None]:
    """(input shape, classes) of a plain MLP whose first layer is a Linear (the training-config
    path without ``input_shape``); None for any other model: a Linear's width says nothing about
    the input of a CNN or a token model (issue 18: a BERT got ``[64]``, its hidden size)."""
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    if not layers:
        return None, None
    first, last = layers[0], layers[-1]
    plain = not any(isinstance(m, (nn.Embedding, nn.EmbeddingBag, nn.Conv1d, nn.Conv2d, nn.Conv3d))
                    for m in model.modules())
    leaves = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    shape = [first.in_features] if plain and isinstance(first, nn.Linear) and leaves[:1] == [first] else None
    classes = last.out_features if isinstance(last, nn.Linear) else None
    return shape, classes


def new_trigger_mark(model: nn.Module, key: MasterKey, *, triggers: int = DEFAULT_TRIGGERS,
                     input_shape: Sequence[int] | None = None, num_classes: int | None = None,
                     low: float = 0.0, high: float = 1.0, strength: float = DEFAULT_TRIGGER_STRENGTH,
                     per_step: int = DEFAULT_PER_STEP, threshold: float = DEFAULT_P_THRESHOLD,
                     inputs: TriggerInputs | None = None) -> tuple[TriggerRegularizer, WatermarkRecord]:
    """Create a trigger-set mark for ``model``: the regulariser to train with and its record.

    ``inputs`` (from the bundle's input spec) fixes the triggers' shape, dtype and range and wins
    over ``input_shape``/``low``/``high``; token inputs give integer ids in ``[0, vocab)``."""
    inferred_shape, inferred_classes = _infer_io(model)
    if inputs is None:
        shape = list(input_shape) if input_shape else inferred_shape
        inputs = TriggerInputs(tuple(int(d) for d in shape), float(low), float(high)) if shape else None
    classes = num_classes or inferred_classes
    if inputs is None:
        raise InputError("cannot tell the model's input shape for trigger inputs (only a plain MLP's is read "
                         "off its first layer)", hint="set input_shape, low and high in the watermark section, "
                                                      "e.g. input_shape: [1, 8, 8]")
    if not classes or classes < 2:
        raise InputError("cannot tell the model's number of classes for trigger labels",
                         hint="set num_classes in the watermark section")
    if triggers < 10:
        raise InputError(f"watermark triggers={triggers} is too few for a meaningful p-value; use >= 10")
    if not inputs.high > inputs.low:
        raise InputError(f"trigger input range [{inputs.low}, {inputs.high}] is empty; 'high' must exceed 'low'")
    params = {"triggers": triggers, "num_classes": classes, **inputs.params(), "chance": 1.0 / classes,
              "strength": strength}
    if not inputs.tokens:
        params.pop("input_dtype")  # float records read as before by older releases
    record, secret = new_mark(key, "trigger", threshold=threshold, params=params)
    reg = TriggerRegularizer(TriggerSet.from_record(record, secret), strength=strength, per_step=per_step)
    return reg, record


def model_predictor(model: nn.Module) -> Predictor:
    """Predict with a local module (eval mode, no gradients)."""
    import torch

    def predict(inputs: torch.Tensor) -> list[int]:
        model.eval()
        with torch.no_grad():
            out = model(inputs)
            return getattr(out, "logits", out).argmax(-1).tolist()  # a Hugging Face output: its logits

    return predict


def verify_trigger(predict: Predictor, record: WatermarkRecord, key: MasterKey, *,
                   batch_size: int = 50) -> Verdict:
    """Query ``predict`` with the secret triggers; count secret labels returned; p-value vs chance."""
    if record.method != "trigger":
        raise InputError(f"the record is for a {record.method} watermark, not a trigger-set one",
                         hint="verify it against the model's weights (a bundle) instead of an endpoint")
    from torchshield.model.watermark import keyed

    if record.params.get("design") == keyed.DESIGN:
        inputs, labels, which = keyed.verification_set(record, key)
        return keyed.verify_keyed(_ask(predict, inputs, batch_size), labels, which, record)
    triggers = TriggerSet.from_record(record, record.open_secret(key))
    predicted = _ask(predict, triggers.inputs, batch_size)
    matches = sum(int(p == y) for p, y in zip(predicted, triggers.labels.tolist(), strict=True))
    chance = float(record.params.get("chance", 1.0 / int(record.params["num_classes"])))
    return decide("trigger", matches, len(predicted), chance, record.threshold, record.mark_id)


def _ask(predict: Predictor, inputs: torch.Tensor, batch_size: int) -> list[int]:
    predicted: list[int] = []
    for start in range(0, len(inputs), batch_size):
        batch = predict(inputs[start:start + batch_size])
        predicted.extend(int(v) for v in batch)
    if len(predicted) != len(inputs):
        raise InputError(f"the model answered {len(predicted)} predictions for {len(inputs)} "
                         "trigger queries", hint="check that it returns one class per input")
    return predicted
