"""The removal attacks a watermark is measured against, applied the way an adversary would.

Each function takes a model the adversary holds and returns the model they would publish:

* ``fine_tune``: more training on the adversary's own (held-out) data with a *fresh*
  optimiser, without our regulariser; the usual "I retrained it" defence.
* ``prune_magnitude``: zero the smallest ``amount`` of each weight matrix (per-layer
  magnitude pruning, as ``torch.nn.utils.prune.l1_unstructured`` does, but applied in place
  so the state dict keeps its names and no mask buffers appear).
* ``quantize_int8``: ``torch.ao.quantization.quantize_dynamic`` to int8 Linear layers, with
  ``dequantized_state`` to read the int8 weights back for white-box verification.
* ``distill``: train a *new* model (same or other architecture) on the suspect's soft outputs
  over in-distribution data; only black-box verification applies to the student.

Used by ``benchmarks/bench_watermark.py`` and the tests; none of this is needed to verify.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["dequantized_state", "distill", "fine_tune", "prune_magnitude", "quantize_int8"]


def fine_tune(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *, epochs: int = 5,
              lr: float = 1e-3) -> nn.Module:
    """Continue training in place with a fresh Adam optimiser and plain cross-entropy."""
    import torch

    from torchshield.nn.loop import fit

    fit(model, loader, epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), lr=lr))
    return model.eval()


def prune_magnitude(model: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of smallest-magnitude entries of every weight matrix, in place."""
    import torch

    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() >= 2:
                k = round(amount * p.numel())
                if k:
                    cut = p.abs().flatten().kthvalue(k).values
                    p.masked_fill_(p.abs() <= cut, 0.0)
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with int8 dynamically quantised Linear layers (what a deployer ships)."""
    import copy

    import torch
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def dequantized_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Float weights under the original names, read back from a (partly) quantised model."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        weight = getattr(module, "weight", None)
        if callable(weight):  # quantized Linear: weight() returns a quantized tensor
            out[prefix + "weight"] = weight().dequantize()
            bias = module.bias()
            if bias is not None:
                out[prefix + "bias"] = bias.detach()
        else:
            for pname, p in module.named_parameters(recurse=False):
                out[prefix + pname] = p.detach()
    return out


def distill(teacher: nn.Module, student: nn.Module, inputs: torch.Tensor, *, epochs: int = 30,
            temperature: float = 2.0, batch_size: int = 64, lr: float = 2e-3) -> nn.Module:
    """Train ``student`` to match ``teacher``'s softened outputs on ``inputs`` (Hinton et al.)."""
    import torch
    import torch.nn.functional as F

    teacher.eval()
    with torch.no_grad():
        soft = F.softmax(teacher(inputs) / temperature, dim=-1)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(inputs)).split(batch_size):
            log_p = F.log_softmax(student(inputs[idx]) / temperature, dim=-1)
            loss = F.kl_div(log_p, soft[idx], reduction="batchmean") * temperature**2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return student.eval()
