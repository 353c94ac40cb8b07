"""What attacks need from any model: logits from inputs in their natural shape and range.

Models users bring return output objects (``SequenceClassifierOutput.logits``) and expect
normalised images; attacks reason in raw input units (pixels in [0, 1]) on ``N x C x H x W``.
:class:`LogitsModel` takes the logits out of whatever the model returns, and
:func:`attackable` adds the normalisation inside the model (:class:`NormalizedModel`), so an
``eps`` of 8/255 means 8/255 of a pixel.

Token-id models have no continuous input space to perturb: a token id plus 0.3 is not a token.
:func:`attackable` refuses them with :class:`NotApplicable`, which callers report as "not
applicable" rather than as a failure (attacks in embedding space are future work)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.normalization import NormalizedModel

__all__ = ["LogitsModel", "NotApplicable", "attackable", "input_bounds"]


class NotApplicable(InputError):
    """The evaluation does not apply to this kind of model (e.g. token ids)."""


class LogitsModel(nn.Module):
    """``model(x)`` reduced to its logits tensor (``.logits``, a tuple's first item, or itself)."""

    def __init__(self, model: nn.Module, *, input_name: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(**{self.input_name: x}) if self.input_name else self.model(x)
        if isinstance(out, Tensor):
            return out
        logits = getattr(out, "logits", None)
        if isinstance(logits, Tensor):
            return logits
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
            return out[0]
        raise InputError(f"the model returns {type(out).__name__}, not logits",
                         hint="attack a classifier whose output is a tensor or has .logits")


def input_bounds(preprocessing: Mapping[str, Any]) -> tuple[float, float] | None:
    spec = preprocessing.get("input") or {}
    lo, hi = spec.get("min"), spec.get("max")
    return (float(lo), float(hi)) if lo is not None and hi is not None else None


def attackable(module: nn.Module, preprocessing: Mapping[str, Any]) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The model as attacks see it (logits from raw inputs) and one example's shape, if known."""
    spec = preprocessing.get("input") or {}
    kind = spec.get("kind")
    if kind == "tokens" or str(spec.get("dtype", "")).startswith(("int", "uint")):
        raise NotApplicable(
            f"the model takes token ids ({spec.get('dtype', 'integers')} in [{spec.get('min')}, {spec.get('max')}]), "
            "which no Lp-ball attack or noise certificate applies to",
            hint="robustness of text models is measured with text attacks, not with torchshield robust")
    if (preprocessing.get("output") or {}).get("kind") not in (None, "logits"):
        raise NotApplicable(f"the model outputs {preprocessing['output']['kind']}, not class logits")
    net: nn.Module = LogitsModel(module, input_name=spec.get("name"))
    norm = preprocessing.get("normalization")
    if norm and norm.get("mean") is not None and norm.get("std") is not None:
        net = NormalizedModel(net, norm["mean"], norm["std"], channel_dim=1)
    shape: Sequence[int] | None = spec.get("shape")
    return net.eval(), tuple(int(s) for s in shape) if shape else None
