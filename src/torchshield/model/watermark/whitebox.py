"""White-box watermark: a secret bit string hidden in quantities the network's symmetries keep.

Embedding adds a regulariser to the training loss that pushes ``sigmoid(X c)`` towards the
secret bits ``b``, where ``X`` is a secret T x M matrix and ``c`` the *carrier*, a vector read off
one layer's weight. Extraction is ``sign(X c)``; the owner compares with ``b`` and reports the bit
error rate and the binomial p-value (``significance``).

The carrier (``carrier: unit-mean``, the default since issue 18): the layer's weight rows (one
per output unit, flattened), each scaled to unit length, averaged over the units. It is the
same number for

* any permutation of the layer's output units (a mean does not see order),
* any positive rescaling of a unit (``w_i -> s_i w_i`` for the ReLU symmetry ``relu(s z) = s relu(z)``;
  each row is normalised first), so also our own obfuscation run with another key,
* pruning whole units away (the mean over the rest moves little),

provided the layer's *input* axis is not itself permutable. That is why the default layer is the
model's first Linear/Conv layer: its inputs are the model's inputs (pixels, features), which a
thief cannot reorder without changing the model's interface. This is the "embed in invariant
quantities" answer to issue 18 rather than aligning the suspect to a reference by weight
matching: nothing is fitted to the suspect before extraction, so nothing can manufacture
agreement, and the exact null below holds as it did. Uchida et al.'s original carrier (the plain
mean over output units, ``carrier: mean``) is still read for old records; on a hidden layer it
is destroyed by a permutation of the previous layer's units (p 0.60 in issue 18).

Token models (``carrier: embedding-unit-mean``, chosen automatically for a model with an
``nn.Embedding`` of at least 16 rows): the first Linear of a transformer reads the residual
stream, which ``model obfuscate`` permutes (issue 18), so it is no carrier. The word-embedding
table ``[vocab, hidden]`` is read by columns instead: each hidden unit's column over the
vocabulary, scaled to unit length, averaged over the units. Its inputs are the token ids, which a
thief cannot reorder without shipping another tokenizer; the same invariances hold.

When the suspect's tensors do not carry the recorded name (names scrambled by obfuscation,
re-exported checkpoints), every tensor whose input shape matches is tried and the smallest
p-value is multiplied by the number of candidates (Bonferroni): the reported p-value still bounds
the chance that an unrelated model passes.

What it proves: whoever holds weights that decode to our T bits under our secret projection
got them from our model (p = 2^-T for T error-free bits), because for unrelated weights each
decoded bit is a fair coin. What it does not prove: anything about a model whose weights we
cannot read, or a model re-trained from scratch (distillation: use a trigger mark); an
adversary who learns ``X`` can remove the mark; a model whose inputs were re-encoded
(a thief who permutes input features and ships the permutation as preprocessing).

``X`` has Rademacher (+-1) entries expanded from the mark's secret with SHAKE-256, so the
null distribution is exactly Binomial(T, 1/2) for any fixed unrelated weights (symmetry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from torchshield.errors import InputError
from torchshield.model.watermark.record import WatermarkRecord, expand_secret, new_mark
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD, Verdict, decide

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchshield.crypto.keys import MasterKey

__all__ = ["CARRIERS", "WhiteboxRegularizer", "default_layers", "extract_bits", "new_whitebox_mark",
           "verify_whitebox"]

DEFAULT_BITS = 128
DEFAULT_STRENGTH = 1.0
DEFAULT_EVERY = 4
CARRIERS = ("unit-mean", "mean", "embedding-unit-mean", "unit-gram")
"""``unit-mean``: invariant to unit permutation and positive rescaling (default); ``mean``: Uchida's;
``embedding-unit-mean``: ``unit-mean`` of a token embedding table read by columns (the default for a
model with token inputs: its first Linear reads the residual stream, which obfuscation permutes);
``unit-gram``: the upper triangle of the mean of ``u u^T`` over the unit-length rows ``u`` (same
invariances, ``w(w+1)/2`` entries for ``w`` inputs: the default for a first layer with 16 to 63
inputs, e.g. a CNN stem of 3 x 3 x 3 = 27, where ``unit-mean``'s 27 entries cannot hold 27 bits)."""
_EMBEDDING = "embedding-unit-mean"
_GRAM = "unit-gram"
_GRAM_BELOW = 64  # first layers narrower than this (and >= 16 inputs) get the unit-gram carrier
_LEGACY_CARRIER = "mean"  # records written before issue 18 have no "carrier" parameter


def _bits(secret: bytes, n: int) -> torch.Tensor:
    import numpy as np
    import torch

    raw = np.frombuffer(expand_secret(secret, "whitebox/bits", (n + 7) // 8), dtype=np.uint8)
    return torch.from_numpy(np.unpackbits(raw)[:n].astype(np.float32))


def _projection(secret: bytes, n: int, m: int) -> torch.Tensor:
    import numpy as np
    import torch

    raw = np.frombuffer(expand_secret(secret, "whitebox/projection", (n * m + 7) // 8), dtype=np.uint8)
    signs = np.unpackbits(raw)[: n * m].astype(np.float32) * 2.0 - 1.0
    return torch.from_numpy(signs.reshape(n, m))


def _carrier(weights: Sequence[torch.Tensor], kind: str = "unit-mean") -> torch.Tensor:
    """The vector that carries the mark: per layer, the weight rows (output units) averaged.

    ``unit-mean`` scales every row to unit length first (an all-zero row, a pruned unit,
    contributes nothing), which makes the average blind to the order and the positive scale of
    the units; ``mean`` is the plain average (Uchida et al.)."""
    import torch

    parts = []
    for w in weights:
        # an embedding table [vocab, hidden]: the units are the hidden columns, the inputs the token ids
        rows = w.float().t() if kind == _EMBEDDING else w.reshape(w.shape[0], -1).float()
        if kind in ("unit-mean", _EMBEDDING, _GRAM):
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)
        if kind == _GRAM:
            gram = rows.t() @ rows / rows.shape[0]
            i, j = torch.triu_indices(gram.shape[0], gram.shape[1])
            parts.append(gram[i, j])
            continue
        parts.append(rows.mean(0))
    return torch.cat(parts)


def _carrier_kind(record: WatermarkRecord) -> str:
    kind = str(record.params.get("carrier", _LEGACY_CARRIER))
    if kind not in CARRIERS:
        raise InputError(f"the watermark record names carrier {kind!r}; this release reads "
                         f"{', '.join(CARRIERS)}", hint="upgrade torchshield")
    return kind


def _weight_layers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(parameter name, weight) of every Linear/Conv layer, in module order (the order a plain
    feed-forward model applies them). A weight tied to an earlier parameter (GPT-2's ``lm_head``
    shares ``wte``) is skipped: it is stored, and marked, under that parameter's name."""
    from torch import nn

    named = dict(model.named_parameters())  # lists a tied tensor once, under its first name
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            pname = f"{name}.weight" if name else "weight"
            if named.get(pname) is module.weight:
                out.append((pname, module.weight))
    return out


def _embeddings(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    from torch import nn

    return [(f"{name}.weight", m.weight) for name, m in model.named_modules() if isinstance(m, nn.Embedding)]


def default_layers(model: nn.Module, *, carrier: str = "unit-mean") -> list[str]:
    """``unit-mean``: the first Linear/Conv layer, whose inputs are the model's own (see the module
    docstring). ``embedding-unit-mean``: the first token embedding table (BERT's word embeddings,
    GPT-2's ``wte``). ``mean``: the weight with the widest input among hidden layers."""
    if carrier == _EMBEDDING:
        tables = _embeddings(model)
        if not tables:
            raise InputError("the model has no nn.Embedding for the embedding-unit-mean carrier")
        return [tables[0][0]]
    if carrier in ("unit-mean", _GRAM):
        layers = _weight_layers(model)
        if not layers:
            raise InputError("the model has no Linear or Conv layer to carry a white-box watermark")
        return [layers[0][0]]
    candidates = [(name, p) for name, p in model.named_parameters() if name.endswith("weight") and p.dim() >= 2]
    if not candidates:
        raise InputError("the model has no Linear or Conv weight to carry a white-box watermark")
    hidden = candidates[1:-1] or candidates[:-1] or candidates
    name, _ = max(hidden, key=lambda item: item[1][0].numel())
    return [name]


def _fits(tensor: torch.Tensor, shape: Sequence[int], kind: str) -> bool:
    """Same input shape; ``unit-mean`` also reads a layer whose units were pruned away or added."""
    if kind in ("unit-mean", _GRAM):
        return tensor.dim() == len(shape) and list(tensor.shape[1:]) == list(shape[1:])
    if kind == _EMBEDDING:  # same vocabulary; the hidden width may differ (units pruned or added)
        return tensor.dim() == 2 and int(tensor.shape[0]) == int(shape[0])
    return list(tensor.shape) == list(shape)


def _select(tensors: Mapping[str, torch.Tensor], layers: Mapping[str, Sequence[int]],
            kind: str = _LEGACY_CARRIER) -> list[torch.Tensor]:
    out = []
    for name, shape in layers.items():
        if name not in tensors:
            raise InputError(f"the model has no tensor {name!r} named in the watermark record",
                             hint="the record is for another model (or this one was obfuscated: "
                                  "deobfuscate it first)")
        if not _fits(tensors[name], shape, kind):
            raise InputError(f"tensor {name!r} has shape {list(tensors[name].shape)}, the watermark "
                             f"record expects {list(shape)}", hint="the record is for another model")
        out.append(tensors[name])
    return out


class WhiteboxRegularizer:
    """``strength * BCE(sigmoid(X c), b)``: the loss term that writes the bits into the weights.

    Called with the model at each training step. The term is applied on one step in ``every``
    with ``every`` times the weight: the same pull on average, at a fraction of the per-step cost
    (on a small MLP the autograd bookkeeping of even a tiny term is ~20 % of a step; the goal is
    <= 10 % training-time overhead)."""

    def __init__(self, record: WatermarkRecord, secret: bytes, *, strength: float = DEFAULT_STRENGTH,
                 every: int = DEFAULT_EVERY) -> None:
        self.layers = dict(record.layers)
        self.kind = _carrier_kind(record)
        n = int(record.params["bits"])
        m = sum(_input_width(shape, self.kind) for shape in self.layers.values())
        self.bits = _bits(secret, n)
        self.projection = _projection(secret, n, m)
        self.strength = strength
        self.every = max(1, int(every))
        self._calls = 0

    def __call__(self, model: nn.Module) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        self._calls += 1
        if (self._calls - 1) % self.every:
            return torch.zeros(())
        params = dict(model.named_parameters())
        logits = self.projection.to(params[next(iter(self.layers))].device) @ _carrier(
            _select(params, self.layers, self.kind), self.kind)
        loss = F.binary_cross_entropy_with_logits(logits, self.bits.to(logits.device))
        return (self.strength * self.every) * loss


def _input_width(shape: Sequence[int], kind: str = "unit-mean") -> int:
    if kind == _EMBEDDING:
        return int(shape[0])  # one carrier entry per token id
    if kind == _GRAM:
        w = _input_width(shape)
        return w * (w + 1) // 2
    width = 1
    for d in shape[1:]:
        width *= int(d)
    return width


def new_whitebox_mark(model: nn.Module, key: MasterKey, *, layers: Sequence[str] | None = None,
                      bits: int | None = None, strength: float = DEFAULT_STRENGTH,
                      threshold: float = DEFAULT_P_THRESHOLD, carrier: str | None = None,
                      ) -> tuple[WhiteboxRegularizer, WatermarkRecord]:
    """Create a white-box mark for ``model``: the regulariser to train with and its record.

    ``bits`` defaults to ``min(128, input width of the layers)``. ``carrier`` defaults to
    ``unit-mean`` on the first layer; when that layer has fewer inputs than the bits asked for
    (or than 16), e.g. a tabular model with 7 features, it falls back to Uchida's ``mean`` carrier
    on the widest hidden layer, which is *not* invariant to permuting hidden units: the record's
    ``params.carrier`` says which one a mark uses."""
    if carrier is None:
        carrier = _auto_carrier(model, layers, bits)
    if carrier not in CARRIERS:
        raise InputError(f"watermark.carrier: unknown carrier {carrier!r}", hint=f"use one of {', '.join(CARRIERS)}")
    params = dict(model.named_parameters())
    names = list(layers) if layers else default_layers(model, carrier=carrier)
    for name in names:
        if name not in params or params[name].dim() < 2:
            raise InputError(f"watermark layer {name!r} is not a Linear/Conv weight of this model",
                             hint="name a parameter such as '2.weight' (see 'torchshield model inspect')")
    shapes = {name: list(params[name].shape) for name in names}
    width = sum(_input_width(s, carrier) for s in shapes.values())
    bits = min(DEFAULT_BITS, width) if bits is None else int(bits)
    if bits < 16:
        raise InputError(f"watermark bits={bits} is too few for a meaningful p-value; use at least 16",
                         hint=f"layers {names} have {width} input weights; name a wider layer" if width < 16 else None)
    if bits > width:
        raise InputError(f"watermark bits={bits} exceed the {width} input weights of layers {names}",
                         hint="use fewer bits or add a wider layer")
    record, secret = new_mark(key, "whitebox", threshold=threshold, layers=shapes,
                              params={"bits": bits, "strength": strength, "carrier": carrier})
    return WhiteboxRegularizer(record, secret, strength=strength), record


def _auto_carrier(model: nn.Module, layers: Sequence[str] | None, bits: int | None) -> str:
    if layers:
        return "unit-mean"
    tables = _embeddings(model)
    first = _weight_layers(model)
    if tables and (int(tables[0][1].shape[0]) >= max(16, bits or 16) or not first):
        # token inputs: the vocabulary axis is the one a thief cannot permute (and the only carrier
        # left when the model's Linear layers are all tied to its embedding, as GPT-2's lm_head is)
        return _EMBEDDING
    if not first:
        return "unit-mean"  # default_layers raises the error naming the problem
    width = _input_width(list(first[0][1].shape))
    if width < max(16, bits or 16) and width * (width + 1) // 2 < max(32, 2 * (bits or 16)):
        return _LEGACY_CARRIER
    return "unit-mean" if width >= max(_GRAM_BELOW, bits or 16) else _GRAM


def extract_bits(tensors: Mapping[str, torch.Tensor], record: WatermarkRecord, secret: bytes) -> torch.Tensor:
    """Decode the bit string the weights carry under the record's secret projection."""
    kind = _carrier_kind(record)
    return _decode(_select(tensors, record.layers, kind), record, secret, kind)


def _decode(weights: Sequence[torch.Tensor], record: WatermarkRecord, secret: bytes, kind: str) -> torch.Tensor:
    import torch

    n = int(record.params["bits"])
    with torch.no_grad():
        carrier = _carrier([w.detach().cpu() for w in weights], kind)
        return (_projection(secret, n, carrier.numel()) @ carrier > 0).float()


def _candidates(tensors: Mapping[str, torch.Tensor], record: WatermarkRecord, kind: str) -> list[str]:
    """Tensors that could be the marked layer when its recorded name is absent (single-layer marks)."""
    if len(record.layers) != 1:
        return []
    (shape,) = record.layers.values()
    return sorted(name for name, t in tensors.items() if t.is_floating_point() and _fits(t, shape, kind))


def verify_whitebox(tensors: Mapping[str, torch.Tensor], record: WatermarkRecord, key: MasterKey) -> Verdict:
    """Is the mark in these weights? Bit agreement and its p-value under Binomial(T, 1/2).

    If the recorded layer name is absent (scrambled names) every tensor of the right input shape
    is decoded and the best p-value is multiplied by their number (Bonferroni), so the verdict's
    false-positive rate stays below the threshold; ``Verdict.total`` is the bit count, and the
    p-value the corrected one."""
    if record.method != "whitebox":
        raise InputError(f"the record is for a {record.method} watermark, not a white-box one",
                         hint="verify it with --endpoint (black-box) or a model callable")
    kind = _carrier_kind(record)
    secret = record.open_secret(key)
    if all(name in tensors for name in record.layers):
        extracted = extract_bits(tensors, record, secret)
        expected = _bits(secret, extracted.numel())
        matches = int((extracted == expected).sum())
        return decide("whitebox", matches, extracted.numel(), 0.5, record.threshold, record.mark_id)
    names = _candidates(tensors, record, kind)
    if not names:
        _select(tensors, record.layers, kind)  # raises the error naming the missing tensor
    expected = _bits(secret, int(record.params["bits"]))
    best = max(int((_decode([tensors[n]], record, secret, kind) == expected).sum()) for n in names)
    verdict = decide("whitebox", best, expected.numel(), 0.5, record.threshold, record.mark_id)
    p = min(1.0, verdict.p_value * len(names))
    return replace(verdict, p_value=p, present=p < record.threshold)
