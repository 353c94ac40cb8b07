"""White-box watermark (Uchida et al. 2017): a secret bit string hidden in chosen weights.

Embedding adds a regulariser to the training loss that pushes ``sigmoid(X w)`` towards the
secret bits ``b``, where ``w`` is the mean over output units of a layer's weight (Uchida's
choice: it does not depend on the order of output units, and the regulariser spreads its pull
evenly over them) and ``X`` is a secret T x M matrix. Extraction is ``sign(X w)``; the owner
compares with ``b`` and reports the bit error rate and the binomial p-value
(``significance``).

What it proves: whoever holds weights that decode to our T bits under our secret projection
got them from our model (p = 2^-T for T error-free bits), because for unrelated weights each
decoded bit is a fair coin. What it does not prove: anything about a model whose weights we
cannot read, or a model whose layers were permuted, re-shaped or re-trained from scratch
(e.g. distillation); an adversary who learns ``X`` can remove the mark.

``X`` has Rademacher (+-1) entries expanded from the mark's secret with SHAKE-256, so the
null distribution is exactly Binomial(T, 1/2) for any fixed unrelated weights (symmetry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from torchshield.errors import InputError
from torchshield.model.watermark.record import WatermarkRecord, expand_secret, new_mark
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD, Verdict, decide

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchshield.crypto.keys import MasterKey

__all__ = ["WhiteboxRegularizer", "default_layers", "extract_bits", "new_whitebox_mark", "verify_whitebox"]

DEFAULT_BITS = 128
DEFAULT_STRENGTH = 1.0
DEFAULT_EVERY = 4


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


def _carrier(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """The vector that carries the mark: per layer, the weight averaged over output units."""
    import torch

    return torch.cat([w.reshape(w.shape[0], -1).float().mean(0) for w in weights])


def default_layers(model: nn.Module) -> list[str]:
    """The weight with the widest input among hidden layers (room for the most bits)."""
    candidates = [(name, p) for name, p in model.named_parameters() if name.endswith("weight") and p.dim() >= 2]
    if not candidates:
        raise InputError("the model has no Linear or Conv weight to carry a white-box watermark")
    hidden = candidates[1:-1] or candidates[:-1] or candidates
    name, _ = max(hidden, key=lambda item: item[1][0].numel())
    return [name]


def _select(tensors: Mapping[str, torch.Tensor], layers: Mapping[str, Sequence[int]]) -> list[torch.Tensor]:
    out = []
    for name, shape in layers.items():
        if name not in tensors:
            raise InputError(f"the model has no tensor {name!r} named in the watermark record",
                             hint="the record is for another model (or this one was obfuscated: "
                                  "deobfuscate it first)")
        if list(tensors[name].shape) != list(shape):
            raise InputError(f"tensor {name!r} has shape {list(tensors[name].shape)}, the watermark "
                             f"record expects {list(shape)}", hint="the record is for another model")
        out.append(tensors[name])
    return out


class WhiteboxRegularizer:
    """``strength * BCE(sigmoid(X w), b)``: the loss term that writes the bits into the weights.

    Called with the model at each training step. The term is applied on one step in ``every``
    with ``every`` times the weight: the same pull on average, at a fraction of the per-step cost
    (on a small MLP the autograd bookkeeping of even a tiny term is ~20 % of a step; the goal is
    <= 10 % training-time overhead)."""

    def __init__(self, record: WatermarkRecord, secret: bytes, *, strength: float = DEFAULT_STRENGTH,
                 every: int = DEFAULT_EVERY) -> None:
        self.layers = dict(record.layers)
        n = int(record.params["bits"])
        m = sum(_input_width(shape) for shape in self.layers.values())
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
            _select(params, self.layers))
        loss = F.binary_cross_entropy_with_logits(logits, self.bits.to(logits.device))
        return (self.strength * self.every) * loss


def _input_width(shape: Sequence[int]) -> int:
    width = 1
    for d in shape[1:]:
        width *= int(d)
    return width


def new_whitebox_mark(model: nn.Module, key: MasterKey, *, layers: Sequence[str] | None = None,
                      bits: int = DEFAULT_BITS, strength: float = DEFAULT_STRENGTH,
                      threshold: float = DEFAULT_P_THRESHOLD) -> tuple[WhiteboxRegularizer, WatermarkRecord]:
    """Create a white-box mark for ``model``: the regulariser to train with and its record."""
    params = dict(model.named_parameters())
    names = list(layers) if layers else default_layers(model)
    for name in names:
        if name not in params or params[name].dim() < 2:
            raise InputError(f"watermark layer {name!r} is not a Linear/Conv weight of this model",
                             hint="name a parameter such as '2.weight' (see 'torchshield model inspect')")
    shapes = {name: list(params[name].shape) for name in names}
    width = sum(_input_width(s) for s in shapes.values())
    if bits < 16:
        raise InputError(f"watermark bits={bits} is too few for a meaningful p-value; use at least 16")
    if bits > width:
        raise InputError(f"watermark bits={bits} exceed the {width} input weights of layers {names}",
                         hint="use fewer bits or add a wider layer")
    record, secret = new_mark(key, "whitebox", threshold=threshold, layers=shapes,
                              params={"bits": bits, "strength": strength})
    return WhiteboxRegularizer(record, secret, strength=strength), record


def extract_bits(tensors: Mapping[str, torch.Tensor], record: WatermarkRecord, secret: bytes) -> torch.Tensor:
    """Decode the bit string the weights carry under the record's secret projection."""
    import torch

    weights = _select(tensors, record.layers)
    n = int(record.params["bits"])
    with torch.no_grad():
        carrier = _carrier([w.detach().cpu() for w in weights])
        return (_projection(secret, n, carrier.numel()) @ carrier > 0).float()


def verify_whitebox(tensors: Mapping[str, torch.Tensor], record: WatermarkRecord, key: MasterKey) -> Verdict:
    """Is the mark in these weights? Bit agreement and its p-value under Binomial(T, 1/2)."""
    if record.method != "whitebox":
        raise InputError(f"the record is for a {record.method} watermark, not a white-box one",
                         hint="verify it with --endpoint (black-box) or a model callable")
    secret = record.open_secret(key)
    extracted = extract_bits(tensors, record, secret)
    expected = _bits(secret, extracted.numel())
    matches = int((extracted == expected).sum())
    return decide("whitebox", matches, extracted.numel(), 0.5, record.threshold, record.mark_id)
