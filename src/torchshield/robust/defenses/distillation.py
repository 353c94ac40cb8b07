"""Defensive distillation (Papernot et al. 2016), kept for comparison and teaching.

Train a teacher with softmax at temperature T, train a student on the teacher's soft labels at
the same T, deploy the student at T = 1. Its logits are then ~T times larger, the softmax
saturates and input gradients vanish, so gradient attacks such as FGSM and PGD with few steps
fail. This is gradient masking, not robustness: Carlini & Wagner (2017) and score-based
attacks (Square) break it. ``torchshield robust eval --attack cw-l2,square`` shows that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchshield.errors import InputError

__all__ = ["defensive_distillation", "distillation_loss", "temperature_loss"]

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _check(temperature: float) -> float:
    if not temperature >= 1:
        raise InputError(f"distillation temperature must be >= 1, got {temperature}")
    return float(temperature)


def temperature_loss(temperature: float) -> LossFn:
    """Per-example cross-entropy of ``softmax(logits / T)``: how the teacher is trained."""
    t = _check(temperature)
    return lambda model, x, y: F.cross_entropy(model(x) / t, y, reduction="none")


def distillation_loss(teacher: nn.Module, temperature: float) -> LossFn:
    """Per-example cross-entropy between the teacher's and the student's softmax at T."""
    t = _check(temperature)

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            was_training = teacher.training
            teacher.eval()
            soft = F.softmax(teacher(x) / t, dim=1)
            teacher.train(was_training)
        return -(soft * F.log_softmax(model(x) / t, dim=1)).sum(dim=1)

    return loss


def defensive_distillation(build: Callable[[], nn.Module], loader: Iterable[tuple[Tensor, Tensor]], *,
                           temperature: float = 20.0, epochs: int = 10, lr: float = 1e-3) -> nn.Module:
    """Train teacher then student through the shared loop; return the student (deploy at T = 1)."""
    from torchshield.nn.loop import fit

    teacher = build()
    fit(teacher, loader, epochs=epochs, optimizer=torch.optim.Adam(teacher.parameters(), lr=lr),
        loss_fn=temperature_loss(temperature))
    student = build()
    fit(student, loader, epochs=epochs, optimizer=torch.optim.Adam(student.parameters(), lr=lr),
        loss_fn=distillation_loss(teacher.eval(), temperature))
    return student.eval()
