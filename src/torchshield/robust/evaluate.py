"""Robust-accuracy evaluation: clean accuracy and, per attack and epsilon, the fraction of
examples that stay correctly classified under attack.

The figure to report is the ``standard`` ensemble's (worst case per example over APGD-CE,
APGD-T, FAB-T, APGD-CW and Square, see :mod:`torchshield.robust.attacks.ensemble`); single attacks are
diagnostics. :attr:`RobustnessReport.warnings` says when attacks disagree in the way gradient
masking makes them (:mod:`torchshield.robust.masking`).

An example counts as robust only if it is classified correctly both clean and attacked, so
robust accuracy never exceeds clean accuracy. Attacks run batch by batch with a seed derived
from ``seed`` and the batch index, so a run is reproducible and its batches independent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.robust.attacks.registry import build_attack
from torchshield.robust.masking import MaskingInput, masking_warnings
from torchshield.robust.validation import check_bounds, check_eps, check_inputs, check_labels

__all__ = ["AttackSpec", "RobustnessReport", "RobustnessRow", "evaluate_robustness"]

AttackSpec = str | tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class RobustnessRow:
    attack: str
    eps: float
    robust_accuracy: float
    attack_success_rate: float  # among clean-correct examples, the fraction the attack flipped
    mean_perturbation: float  # mean norm (in the attack's norm) over attacked examples
    seconds: float
    norm: str = "linf"
    access: str = "gradient"  # "gradient", "score" or "ensemble"
    stages: dict[str, int] | None = None  # ensemble only: examples each stage fooled first


@dataclass
class RobustnessReport:
    examples: int
    clean_accuracy: float
    bounds: tuple[float, float]
    rows: list[RobustnessRow] = field(default_factory=list)
    adversarial: dict[tuple[str, float], Tensor] = field(default_factory=dict, repr=False)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "clean_accuracy": self.clean_accuracy, "bounds": list(self.bounds),
                "results": [dict(r.__dict__) for r in self.rows], "warnings": list(self.warnings)}

    def check_masking(self) -> list[str]:
        """Recompute :attr:`warnings` from the rows (attacks that disagree as masking makes them)."""
        self.warnings = masking_warnings(
            [MaskingInput(r.attack, r.access, r.norm, r.eps, r.robust_accuracy, r.stages) for r in self.rows],
            self.examples)
        return self.warnings


def _spec(spec: AttackSpec) -> tuple[str, dict[str, Any]]:
    return (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(xb).argmax(dim=1) for xb in x.split(batch_size)])
    finally:
        model.train(was_training)


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, *, attacks: Sequence[AttackSpec],
                        eps: Sequence[float], bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256,
                        seed: int = 0, num_classes: int | None = None, keep_adversarial: bool = False,
                        on_batch: Callable[[int], None] | None = None) -> RobustnessReport:
    """Run every attack at every epsilon over ``(x, y)``; ``on_batch(n)`` reports progress."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    bounds = check_bounds(bounds)
    check_inputs(x, bounds)
    y = check_labels(y, x.shape[0], num_classes=num_classes)
    specs = [_spec(a) for a in attacks]
    for name, params in specs:  # fail fast on bad names, parameters or budgets, before any work
        for e in eps:
            probe = build_attack(name, model, eps=e, bounds=bounds, num_classes=num_classes, **params)
            if probe.norm == "l2":
                check_eps(e, norm="l2", bounds=bounds, dim=x[0].numel())
    clean_pred = _predict(model, x, batch_size)
    correct = clean_pred == y
    report = RobustnessReport(len(y), float(correct.double().mean()), bounds)
    for name, params in specs:
        for e in eps:
            start = time.perf_counter()
            adv_batches, robust, norms = [], 0, []
            stages: dict[str, int] | None = None
            for i, (xb, yb, ok) in enumerate(zip(x.split(batch_size), y.split(batch_size),
                                                 correct.split(batch_size), strict=True)):
                attack = build_attack(name, model, eps=e, bounds=bounds, num_classes=num_classes,
                                      seed=seed * 1_000_003 + i, **params)
                adv = attack(xb, yb)
                counts = getattr(attack, "last_counts", None)
                if counts:
                    stages = {k: (stages or {}).get(k, 0) + v for k, v in counts.items()}
                robust += int(((_predict(model, adv, batch_size) == yb) & ok).sum())
                norms.append(attack.ball.norms(adv - xb))
                if keep_adversarial:
                    adv_batches.append(adv)
                if on_batch is not None:
                    on_batch(len(yb))
            n_correct = int(correct.sum())
            report.rows.append(RobustnessRow(
                attack=name, eps=float(e), robust_accuracy=robust / len(y),
                attack_success_rate=(n_correct - robust) / n_correct if n_correct else 0.0,
                mean_perturbation=float(torch.cat(norms).mean()), seconds=time.perf_counter() - start,
                norm=attack.norm, access=attack.access, stages=stages))
            if keep_adversarial:
                report.adversarial[(name, float(e))] = torch.cat(adv_batches)
    report.check_masking()
    return report
