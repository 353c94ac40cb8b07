"""Embedding a mark while training: the ``watermark:`` section of a training config.

``torchshield train`` hands the section to :func:`make_regularizer` and adds the returned terms
to its loss (``nn.loop.fit(regularizers=...)``); the record goes into the bundle's
``watermark`` slot. :func:`embed` does the same for a model that is already trained: a short
fine-tune on its data with the mark's regulariser (the CLI's ``model watermark embed``).

Example section::

    watermark:
      method: whitebox        # or trigger
      bits: 64                # whitebox: length of the secret bit string (default min(128, layer input width))
      strength: 1.0           # weight of the regulariser in the loss
      layers: ["0.weight"]    # whitebox: default = the first Linear/Conv layer (inputs a thief cannot permute)
      carrier: unit-mean      # whitebox: unit-mean (permutation/rescaling invariant, default) or mean (Uchida;
                              # the default when the first layer has too few inputs for the bits)
      threshold: 1.0e-6       # p-value under which verify reports the mark present
      # trigger only: triggers: 100, per_step: 8, input_shape: [64], num_classes: 10, low: 0, high: 1
      # design: keyed-pattern   # in-distribution inputs + secret patterns (survives fine-tuning; needs
      #                         # the owner's data: the default in ``embed``), or noise (Adi et al.)
      # patterns: 16, amplitude: 0.5   # keyed-pattern only (pattern_tokens: half the length for token inputs)

``embed`` and the CLI pass ``inputs`` (a :class:`~torchshield.model.watermark.inputs.TriggerInputs`
read from the bundle's input spec) instead of ``input_shape``/``low``/``high``: trigger inputs
then have the model's own shape, dtype and range (token ids for a text model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torchshield.errors import InputError
from torchshield.model.watermark.record import WatermarkRecord
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD, Verdict

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchshield.crypto.keys import MasterKey
    from torchshield.model.watermark.inputs import TriggerInputs
    from torchshield.nn.loop import ProgressFactory

__all__ = ["OPTIMIZERS", "embed", "make_optimizer", "make_regularizer", "shortfall"]

MARGIN = 1e-3  # embed trains on until p is this many times below the record's threshold
TRIGGER_AGREEMENT = 0.95  # ... and, for a trigger set, until this share of its inputs answer their label

_COMMON = {"method", "strength", "threshold"}
_OPTIONS = {
    "whitebox": _COMMON | {"bits", "layers", "carrier"},
    "trigger": _COMMON | {"triggers", "per_step", "input_shape", "num_classes", "low", "high", "design",
                          "patterns", "amplitude", "pattern_tokens"},
}

_BASE_INPUTS = 1024  # in-distribution inputs a keyed-pattern mark trains on (the first ones are kept)

Regularizer = Callable[["nn.Module"], "torch.Tensor"]
OPTIMIZERS = ("adam", "sgd")
"""Fine-tuning optimisers of ``embed``: Adam, or SGD with momentum 0.9."""


def _number(section: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = section.get(name, default)
    try:
        return kind(value) if value is not None else None
    except (TypeError, ValueError):
        raise InputError(f"watermark.{name}: expected a {kind.__name__}, got {value!r}") from None


def make_regularizer(section: Mapping[str, Any], model: nn.Module, key: MasterKey, *,
                     data: torch.Tensor | None = None, inputs: TriggerInputs | None = None,
                     seen_tokens: torch.Tensor | None = None,
                     ) -> tuple[list[Regularizer], WatermarkRecord]:
    """The loss terms that embed the mark the section describes, and the mark's record.

    ``data``: inputs from the task's distribution for a keyed-pattern trigger set (the
    regulariser trains on them outside the batch, so never pass private data under DP-SGD);
    with data, a trigger section defaults to ``design: keyed-pattern``, without it to ``noise``.
    ``inputs``: the model's input spec (shape, dtype, range) for trigger inputs. ``seen_tokens``:
    every token id of the data the model will be trained on (a keyed token mark draws its pattern
    tokens from the ids absent from it and from ``data``)."""
    if not isinstance(section, Mapping):
        raise InputError("watermark: expected a mapping such as {method: whitebox}")
    method = str(section.get("method", "whitebox"))
    if method not in _OPTIONS:
        raise InputError(f"watermark.method: unknown method {method!r}", hint="use whitebox or trigger")
    unknown = sorted(set(section) - _OPTIONS[method])
    if unknown:
        raise InputError(f"watermark.{unknown[0]}: not an option of the {method} method",
                         hint=f"options: {', '.join(sorted(_OPTIONS[method]))}")
    threshold = _number(section, "threshold", float, DEFAULT_P_THRESHOLD)
    reg: Regularizer
    if method == "whitebox":
        from torchshield.model.watermark.whitebox import DEFAULT_STRENGTH, new_whitebox_mark

        layers = section.get("layers")
        if layers is not None and (isinstance(layers, str) or not isinstance(layers, Sequence)):
            raise InputError("watermark.layers: expected a list of parameter names, e.g. ['3.weight']")
        reg, record = new_whitebox_mark(model, key, layers=layers, threshold=threshold,
                                        bits=_number(section, "bits", int, None),
                                        carrier=str(section["carrier"]) if "carrier" in section else None,
                                        strength=_number(section, "strength", float, DEFAULT_STRENGTH))
    else:
        reg, record = _trigger_mark(section, model, key, threshold, data, inputs, seen_tokens)
    return [reg], record


def _trigger_mark(section: Mapping[str, Any], model: nn.Module, key: MasterKey, threshold: float,
                  data: torch.Tensor | None, inputs: TriggerInputs | None,
                  seen_tokens: torch.Tensor | None = None) -> tuple[Regularizer, WatermarkRecord]:
    from torchshield.model.watermark import keyed
    from torchshield.model.watermark import trigger as t

    design = str(section.get("design", keyed.DESIGN if data is not None else "noise"))
    shape = section.get("input_shape")
    if design == "noise":
        for name in ("patterns", "amplitude", "pattern_tokens"):
            if name in section:
                raise InputError(f"watermark.{name}: only for design: keyed-pattern")
        return t.new_trigger_mark(
            model, key, threshold=threshold, input_shape=[int(d) for d in shape] if shape else None,
            triggers=_number(section, "triggers", int, t.DEFAULT_TRIGGERS),
            num_classes=_number(section, "num_classes", int, None),
            low=_number(section, "low", float, 0.0), high=_number(section, "high", float, 1.0),
            strength=_number(section, "strength", float, t.DEFAULT_TRIGGER_STRENGTH),
            per_step=_number(section, "per_step", int, t.DEFAULT_PER_STEP), inputs=inputs)
    if design != keyed.DESIGN:
        raise InputError(f"watermark.design: unknown design {design!r}", hint=f"use {keyed.DESIGN} or noise")
    if data is None:
        raise InputError("watermark.design: keyed-pattern needs inputs from the task's data",
                         hint="use 'model watermark embed' (it passes the training data), or design: noise")
    if inputs is not None:
        shape = list(inputs.shape)
        inputs.check(data.reshape(len(data), *inputs.shape) if data[0].numel() == math.prod(inputs.shape) else data,
                     "the data to embed the watermark with")
    base = data.reshape(len(data), *[int(d) for d in shape]) if shape else data
    classes = _number(section, "num_classes", int, None) or t._infer_io(model)[1]
    if not classes:
        raise InputError("cannot tell the model's number of classes for trigger labels",
                         hint="set num_classes in the watermark section")
    tokens = bool(inputs is not None and inputs.tokens)
    low = _number(section, "low", float, None if inputs is None else inputs.low)
    high = _number(section, "high", float, None if inputs is None else inputs.high)
    if tokens:  # an embedding's padding row is frozen at zero: a pattern token there would carry nothing
        import torch

        pads = [m.padding_idx for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None]
        if pads:
            extra = torch.tensor(pads, dtype=torch.long)
            seen_tokens = extra if seen_tokens is None else torch.cat([torch.as_tensor(seen_tokens).flatten(), extra])
    return keyed.new_keyed_mark(
        key, base, num_classes=classes, threshold=threshold,
        low=float(base.min()) if low is None else low, high=float(base.max()) if high is None else high,
        triggers=_number(section, "triggers", int, keyed.DEFAULT_TRIGGERS),
        patterns=_number(section, "patterns", int, keyed.default_patterns(classes)),
        amplitude=_number(section, "amplitude", float, keyed.DEFAULT_AMPLITUDE),
        strength=_number(section, "strength", float, keyed.DEFAULT_TOKEN_STRENGTH if tokens else keyed.DEFAULT_STRENGTH),
        per_step=_number(section, "per_step", int, keyed.DEFAULT_PER_STEP),
        tokens=tokens, pattern_tokens=_number(section, "pattern_tokens", int, None), seen_tokens=seen_tokens)


def _base_inputs(loader: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int) -> torch.Tensor:
    import torch

    parts, seen = [], 0
    for x, _ in loader:
        parts.append(x.detach().cpu())
        seen += len(x)
        if seen >= count:
            break
    if not parts:
        raise InputError("the data to embed the watermark with is empty")
    return torch.cat(parts)[:count]


def make_optimizer(name: str, params: Iterable[Any], lr: float) -> torch.optim.Optimizer:
    """``adam`` (torch.optim.Adam) or ``sgd`` (SGD, momentum 0.9) at ``lr``; anything else is refused."""
    import torch

    if name not in OPTIMIZERS:
        raise InputError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}", hint="use adam or sgd")
    if not lr > 0:
        raise InputError(f"learning rate {lr} must be positive")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def embed(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], key: MasterKey,
          section: Mapping[str, Any], *, epochs: int = 10, lr: float = 1e-3, optimizer: str = "adam",
          inputs: TriggerInputs | None = None, progress: ProgressFactory | None = None,
          max_rounds: int = 3, margin: float = MARGIN, trigger_agreement: float = TRIGGER_AGREEMENT) -> WatermarkRecord:
    """Write a mark into an already trained ``model`` by fine-tuning it on its own data.

    ``optimizer``/``lr``: the fine-tuning optimiser (``make_optimizer``); ``inputs``: the model's
    input spec, which fixes the trigger inputs (required for a trigger mark on anything but a plain
    MLP; a Hugging Face model is passed through ``inputs.logits_module`` first).

    Each mark has its own random secret, so how many epochs it needs varies. The mark is
    verified after training and, until its p-value is ``margin`` times below the record's
    threshold (a mark that only just passes is lost to the first fine-tune: measured on a
    ResNet, issue 18), and for a trigger set until at least ``trigger_agreement`` of its inputs are
    answered with their label (on the BERT-style task a token set embedded to 0.87 was lost to an
    Adam 1e-3 fine-tune, one embedded to 1.0 kept: docs/benchmarks.md), trained ``epochs`` more, up
    to ``max_rounds`` times: an embed that returns always leaves a mark its record verifies. One that
    verifies but is still short of these targets is returned; ``shortfall`` says what it lacks (the
    CLI warns: a weak mark is the first thing a fine-tune removes)."""
    import torch

    from torchshield.errors import CheckFailed
    from torchshield.nn.loop import fit

    opt = make_optimizer(optimizer, model.parameters(), lr)
    data = seen = None
    if section.get("method") == "trigger" and section.get("design", "keyed-pattern") == "keyed-pattern":
        data = _base_inputs(loader, _BASE_INPUTS)
        if inputs is not None and inputs.tokens:  # every id the fine-tune will show the model
            seen = torch.unique(torch.cat([x.detach().cpu().long().flatten() for x, _ in loader]))
    regularizers, record = make_regularizer(section, model, key, data=data, inputs=inputs, seen_tokens=seen)
    verdict = None
    for _ in range(max(1, max_rounds)):
        fit(model, loader, epochs=epochs, optimizer=opt, regularizers=regularizers, progress=progress)
        model.eval()
        verdict = _self_check(model, record, key)
        if _short_of(verdict, record, margin, trigger_agreement) is None:
            return record
        model.train()
    model.eval()
    assert verdict is not None
    if not verdict.present:
        raise CheckFailed(f"the watermark did not take after {max_rounds} x {epochs} epochs "
                          f"({verdict.matches}/{verdict.total} agree, p = {verdict.p_value:.2g})",
                          hint="raise strength or epochs, or use fewer bits / triggers")
    return record


def shortfall(model: nn.Module, record: WatermarkRecord, key: MasterKey, *, margin: float = MARGIN,
              trigger_agreement: float = TRIGGER_AGREEMENT) -> str | None:
    """What the mark in ``model`` lacks of embed's robustness targets, or None when it meets them."""
    model.eval()
    return _short_of(_self_check(model, record, key), record, margin, trigger_agreement)


def _short_of(verdict: Verdict, record: WatermarkRecord, margin: float, trigger_agreement: float) -> str | None:
    if verdict.p_value >= record.threshold * margin:
        return (f"p = {verdict.p_value:.2g}, not {margin:g} x below the threshold {record.threshold:g} (a mark "
                "that only just passes is lost to the first fine-tune)")
    if record.method == "trigger" and verdict.agreement < trigger_agreement:
        return (f"{verdict.agreement:.2f} of the trigger inputs answer their label, under the "
                f"{trigger_agreement:.2f} a fine-tune leaves enough of")
    return None


def _self_check(model: nn.Module, record: WatermarkRecord, key: MasterKey) -> Verdict:
    if record.method == "whitebox":
        from torchshield.model.watermark.whitebox import verify_whitebox

        return verify_whitebox(model.state_dict(), record, key)
    from torchshield.model.watermark.trigger import model_predictor, verify_trigger

    return verify_trigger(model_predictor(model), record, key)
