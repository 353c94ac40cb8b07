"""Checks every robustness entry point runs on its inputs before attacking or certifying.

Why strict: a robust-accuracy figure is only meaningful for the threat model it was measured
under. An epsilon larger than the input range, inputs outside the declared bounds, or labels the
model cannot output silently produce numbers that look fine and mean nothing, so they are
refused here with an :class:`~torchshield.errors.InputError` (exit 2) naming the field and fix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchshield.errors import InputError

__all__ = ["check_bounds", "check_eps", "check_inputs", "check_labels", "check_logits", "dtype_bounds"]


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """Return ``(lo, hi)`` as floats; refuse an empty or non-finite range."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input bounds must be two numbers (lo, hi), got {bounds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise InputError(f"input bounds must be finite with lo < hi, got ({lo}, {hi})",
                         hint="declare the range the model's inputs live in, e.g. 0,1")
    return lo, hi


def check_eps(eps: float, *, norm: str, bounds: tuple[float, float], dim: int | None = None) -> float:
    """Refuse a negative epsilon or one larger than the input range allows.

    For Linf the largest meaningful budget is ``hi - lo``; for L2 it is the diameter of the
    input box, ``(hi - lo) * sqrt(dim)``, checked once ``dim`` (features per example) is known.
    """
    try:
        value = float(eps)
    except (TypeError, ValueError) as exc:
        raise InputError(f"epsilon must be a number, got {eps!r}") from exc
    lo, hi = bounds
    if not math.isfinite(value) or value < 0:
        raise InputError(f"epsilon must be a finite number >= 0, got {eps!r}")
    limit = hi - lo if norm == "linf" else None
    if norm == "l2" and dim is not None:
        limit = (hi - lo) * math.sqrt(dim)
    if limit is not None and value > limit * (1 + 1e-12):
        raise InputError(
            f"epsilon {value:g} is larger than the input range allows for the {norm} norm ({limit:g})",
            hint=f"inputs are bounded to [{lo:g}, {hi:g}]; use an epsilon within that range",
        )
    return value


def check_inputs(x: Tensor, bounds: tuple[float, float], *, name: str = "inputs") -> None:
    """Refuse non-float, non-finite or out-of-bounds inputs (one message with the offending range)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {type(x).__name__}"
                         f"{'' if not isinstance(x, Tensor) else ' of ' + str(x.dtype)}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contain NaN or infinite values")
    lo, hi = bounds
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo or xmax > hi:
        raise InputError(
            f"{name} lie in [{xmin:g}, {xmax:g}], outside the declared bounds [{lo:g}, {hi:g}]",
            hint="scale the data into the declared range or declare the right bounds "
                 "(normalisation belongs inside the model, see NormalizedModel)",
        )


def check_labels(y: Tensor | None, n: int, *, num_classes: int | None = None) -> Tensor:
    """Return ``y`` as a 1-D int64 tensor of length ``n`` with values in ``[0, num_classes)``."""
    if y is None:
        raise InputError("labels are missing", hint="give the true class of every example")
    if not isinstance(y, Tensor):
        y = torch.as_tensor(y)
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            raise InputError("labels must be whole class indices, got fractional or missing values")
        y = y.long()
    if y.dtype == torch.bool or y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"labels must be a 1-D integer tensor with one class per example "
                         f"({n}), got shape {tuple(y.shape)} and dtype {y.dtype}")
    y = y.long()
    if n and int(y.min()) < 0:
        raise InputError(f"labels must be >= 0, found {int(y.min())}")
    if num_classes is not None and n and int(y.max()) >= num_classes:
        raise InputError(f"label {int(y.max())} is out of range for a model with {num_classes} classes",
                         hint="check the label column and the model's output width")
    return y


def check_logits(logits: Tensor, n: int, *, num_classes: int | None, max_label: int) -> int:
    """Refuse model outputs that are not ``(n, C)`` logits covering every label; return ``C``."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"the model must return logits of shape (batch, classes), got {shape} "
                         f"for a batch of {n}", hint="attack the classifier head, not a feature extractor")
    width = int(logits.shape[1])
    if num_classes is not None and width != num_classes:
        raise InputError(f"the model returns {width} logits per example but {num_classes} classes "
                         "were declared", hint="check the model architecture or --num-classes")
    if width < 2 or max_label >= width:
        raise InputError(f"label {max_label} is out of range: the model returns {width} logits per example",
                         hint="check that the model and the labels belong together")
    return width


def dtype_bounds(bounds: tuple[float, float], dtype: torch.dtype) -> tuple[float, float]:
    """``(lo, hi)`` rounded *inwards* to values ``dtype`` holds exactly.

    Clamping a float32 tensor to a Python float rounds the bound to float32 first, and
    float32(0.1) > 0.1: the result would lie outside the declared range and fail
    :func:`check_inputs` when fed back. Every valid input already lies inside these edges."""
    lo_t, hi_t = torch.tensor(bounds[0], dtype=dtype), torch.tensor(bounds[1], dtype=dtype)
    if float(lo_t) < bounds[0]:
        lo_t = torch.nextafter(lo_t, torch.tensor(float("inf"), dtype=dtype))
    if float(hi_t) > bounds[1]:
        hi_t = torch.nextafter(hi_t, torch.tensor(float("-inf"), dtype=dtype))
    return float(lo_t), float(hi_t)
