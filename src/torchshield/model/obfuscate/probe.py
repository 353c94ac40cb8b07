"""The probe input every obfuscation plan is checked on, and the shapes the planners read off it.

Why: a planner that maps one layer wrongly (a pool that mixes units, a norm over another axis, a
weight read outside its module) writes a model that computes something else and looks fine. The
planners refuse what they cannot prove, and as a second, independent line every plan, whichever
planner made it, is run against the original on this probe before anything is written
(``obfuscate._check_function``). The probe is deterministic (seeded), inside the input's range:

* a Hugging Face model: token ids below ``vocab_size`` for ``input_ids``, pixels for ``pixel_values``
  (shape from the input spec or the config's ``num_channels``/``image_size``);
* an input spec (a bundle's ``preprocessing.input``: ``shape``, ``min``, ``max``, or token ids):
  floats uniform in ``[min, max]`` (``[0, 1]`` when not given), or ids in ``[min, max]``;
* otherwise read off the first layer: ``Unflatten(1, s)`` takes ``prod(s)`` features, a Linear its
  ``in_features``, an Embedding ids, a convolution its channels over a few common spatial sizes.

A model the probe cannot run is refused (InputError naming the fix): a plan that cannot be
checked is never written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchshield.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Probe", "batchnorm_dims", "build_probe", "eval_mode", "leaf_shapes", "outputs"]

_BATCH = 4
_TOKENS = 8
_SPATIAL = (8, 16, 28, 32, 4, 12, 24, 64)  # tried in turn for a convolutional first layer without a spec


@dataclass(frozen=True)
class Probe:
    """Positional and keyword inputs for one forward call; ``hf``: the output is a HF output object."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    hf: bool = False

    def describe(self) -> str:
        parts = [list(a.shape) for a in self.args] + [f"{k}={list(v.shape)}" for k, v in self.kwargs.items()]
        return ", ".join(str(p) for p in parts)


def _generator() -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(0)


def _dtype(model: nn.Module) -> torch.dtype:
    import torch

    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _floats(model: nn.Module, shape: list[int], low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    import torch

    x = torch.rand(_BATCH, *shape, generator=_generator(), dtype=torch.float64)
    return (low + (high - low) * x).to(_dtype(model))


def _ids(high: int, length: int, low: int = 0) -> torch.Tensor:
    import torch

    return torch.randint(low, high + 1, (_BATCH, length), generator=_generator())


def build_probe(model: nn.Module, input_spec: Mapping[str, Any] | None = None) -> Probe:
    """A seeded input ``model`` runs on (see the module docstring); refuses when none can be built."""
    spec = dict(input_spec or {})
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "model_type", None) and hasattr(model, "main_input_name"):
        candidates = [_hf_probe(model, config, spec)]
    elif spec.get("kind") == "tokens" or str(spec.get("dtype") or "").startswith(("int", "uint")):
        top = int(spec.get("max") or 0)
        candidates = [Probe((_ids(top, _token_length(spec), int(spec.get("min") or 0)),))] if top else []
    elif spec.get("shape"):
        low, high = float(spec.get("min", 0.0) or 0.0), float(spec.get("max", 1.0) or 1.0)
        candidates = [Probe((_floats(model, [int(d) for d in spec["shape"]], low, high),))]
    else:
        candidates = _guessed(model)
    for probe in candidates:
        if _runs(model, probe):
            return probe
    raise InputError(f"cannot run this {type(model).__name__} on a probe input to check that obfuscation keeps "
                     "its outputs; nothing was written",
                     hint="give the model's input spec: protect the bundle with --input-shape and --input-range, "
                          "or pass input_spec={'shape': [...], 'min': ..., 'max': ...} from Python")


def _token_length(spec: Mapping[str, Any]) -> int:
    shape = spec.get("shape")
    length = int(shape[-1]) if shape else _TOKENS
    limit = spec.get("max_length")
    return max(1, min(length, _TOKENS, int(limit) if limit else _TOKENS))


def _hf_probe(model: nn.Module, config: Any, spec: Mapping[str, Any]) -> Probe:
    name = str(model.main_input_name)
    if name == "input_ids":
        vocab = int(getattr(config, "vocab_size", 0) or 0) or int(spec.get("max") or 0) + 1
        positions = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 0)
        length = min(_TOKENS, positions) if positions else _token_length(spec)
        return Probe(kwargs={"input_ids": _ids(vocab - 1, length)}, hf=True) if vocab > 1 else Probe(hf=True)
    if name == "pixel_values":
        shape = spec.get("shape")
        if not shape:
            size = getattr(config, "image_size", 0)
            size = size if isinstance(size, (list, tuple)) else (size, size)
            shape = [int(getattr(config, "num_channels", 3) or 3), *(int(s) for s in size)]
        low, high = float(spec.get("min", 0.0) or 0.0), float(spec.get("max", 1.0) or 1.0)
        return Probe(kwargs={"pixel_values": _floats(model, [int(d) for d in shape], low, high)}, hf=True)
    return Probe(hf=True)  # an input we do not know how to make: refused by build_probe


def _guessed(model: nn.Module) -> list[Probe]:
    from torch import nn

    first = next((m for m in model.modules() if not list(m.children())), None)
    if isinstance(first, nn.Unflatten) and first.dim == 1:
        return [Probe((_floats(model, [math.prod(first.unflattened_size)]),))]
    layer = next((m for m in model.modules() if list(m.parameters(recurse=False))), None)
    if isinstance(layer, nn.Linear):
        return [Probe((_floats(model, [layer.in_features]),))]
    if isinstance(layer, nn.Embedding):
        return [Probe((_ids(layer.num_embeddings - 1, _TOKENS),))]
    convs = ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d))
    dims = next((d for d, cls in convs if isinstance(layer, cls)), 0)
    if dims and isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return [Probe((_floats(model, [layer.in_channels, *([size] * dims)]),)) for size in _SPATIAL]
    return []


def _runs(model: nn.Module, probe: Probe) -> bool:
    if not probe.args and not probe.kwargs:
        return False
    try:
        outputs(model, probe)
    except Exception:  # noqa: BLE001 - any failure means "not this input"; the caller refuses
        return False
    return True


def _call(model: nn.Module, probe: Probe, state: Mapping[str, torch.Tensor] | None) -> Any:
    import torch
    from torch.func import functional_call

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    args = tuple(a.to(device) for a in probe.args)
    kwargs = {k: v.to(device) for k, v in probe.kwargs.items()}
    with eval_mode(model), torch.no_grad():
        if state is None:
            return model(*args, **kwargs)
        return functional_call(model, {k: v.to(device) for k, v in state.items()}, args=args, kwargs=kwargs,
                               strict=False)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (no running-statistics update, no dropout), every submodule's own
    mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def outputs(model: nn.Module, probe: Probe, state: Mapping[str, torch.Tensor] | None = None,
            ) -> list[torch.Tensor]:
    """The output tensors of ``model`` on ``probe`` in eval mode, with ``state`` in place of its own
    tensors when given. A HF model: its logits (or first output); otherwise every tensor it returns."""
    out = _call(model, probe, state)
    if probe.hf:
        logits = getattr(out, "logits", None)
        return [logits if logits is not None else out[0]]
    return _tensors(out)


def _tensors(out: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    return []


def leaf_shapes(model: nn.Module, probe: Probe) -> dict[str, tuple[int, ...]]:
    """The output shape of every leaf module (by qualified name) on its first call with ``probe``."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Any:
        def record(_mod: Any, _inputs: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape))
        return record

    handles = [mod.register_forward_hook(hook(name)) for name, mod in model.named_modules()
               if name and not list(mod.children())]
    try:
        _call(model, probe, None)
    finally:
        for h in handles:
            h.remove()
    return shapes


def batchnorm_dims(layer: nn.Module) -> int:
    """1, 2 or 3 for BatchNorm1d/2d/3d (it normalises axis 1 of a rank ``dims + 2`` input); 0 otherwise."""
    from torch import nn

    kinds = ((1, nn.BatchNorm1d), (2, nn.BatchNorm2d), (3, nn.BatchNorm3d))
    return next((d for d, cls in kinds if isinstance(layer, cls)), 0)
