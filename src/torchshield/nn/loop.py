"""The one training loop every torchshield capability trains through.

Adversarial training, watermark embedding, DP-SGD and federated clients all differ only in
*how a step's gradient is made*, so they plug in here instead of writing their own loops:

- ``loss_fn(model, x, y) -> Tensor`` replaces the loss (adversarial training crafts its
  inputs inside it). It may return per-example losses of shape ``[B]`` (preferred, and
  required under DP-SGD, which clips each example's gradient) or an already reduced scalar.
- ``regularizers`` are ``Callable[[nn.Module], Tensor]`` terms added to the loss. They see
  only the model's parameters, never the batch, so under DP-SGD their gradient is added
  after clipping and noise without spending privacy (post-processing).
- ``callbacks`` receive an :class:`EpochEnd` after every epoch (logging, early stop,
  federated hand-off); returning ``False`` stops training.
- ``privacy`` (from :func:`torchshield.train.dp.make_private`) swaps the backward pass for
  per-example clipping + Gaussian noise and counts the steps for the accountant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import DataLoader

__all__ = [
    "EpochEnd",
    "LossFn",
    "Regularizer",
    "StepEngine",
    "TrainResult",
    "cross_entropy_loss",
    "evaluate",
    "fit",
]

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
Regularizer = Callable[[nn.Module], Tensor]


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy of ``model(x)`` (the default ``loss_fn``)."""
    return nn.functional.cross_entropy(model(x), y, reduction="none")


@dataclass(frozen=True)
class EpochEnd:
    """What a callback learns after each epoch."""

    epoch: int  # 1-based
    epochs: int
    loss: float  # mean training loss over the epoch's examples
    steps: int  # optimizer steps so far
    seconds: float  # wall time so far
    model: nn.Module
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"epsilon": ...} under DP


@dataclass
class TrainResult:
    """What :func:`fit` returns: the loss curve and the work done."""

    epochs: int
    steps: int
    examples: int
    seconds: float
    loss_history: list[float]
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return self.loss_history[-1] if self.loss_history else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "steps": self.steps,
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
            "final_loss": self.final_loss,
            "loss_history": self.loss_history,
            "stopped_early": self.stopped_early,
            **self.extra,
        }


class StepEngine(Protocol):
    """How a private (or otherwise special) step makes its gradient; see ``train.dp``."""

    def loader(self, train_loader: DataLoader | Iterable[tuple[Tensor, Tensor]]) -> Iterable[tuple[Tensor, Tensor]]: ...

    def backward(self, model: nn.Module, per_example_loss: Tensor) -> None: ...

    def step(self, optimizer: torch.optim.Optimizer) -> None: ...

    def epoch_report(self) -> dict[str, Any]: ...


ProgressFactory = Callable[[str, "int | None"], AbstractContextManager[Callable[..., None]]]
"""Makes a progress display: called with a description and a total, it returns a context manager
that yields ``advance(n=1)``. The library never draws one itself; the CLI passes its own."""


def _reduce(loss: Tensor) -> Tensor:
    return loss.mean() if loss.dim() > 0 else loss


def fit(
    model: nn.Module,
    train_loader: DataLoader | Iterable[tuple[Tensor, Tensor]],
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn | None = None,
    regularizers: Sequence[Regularizer] = (),
    callbacks: Sequence[Callable[[EpochEnd], bool | None]] = (),
    device: str | torch.device = "cpu",
    progress: ProgressFactory | None = None,
    privacy: StepEngine | None = None,
) -> TrainResult:
    """Train ``model`` for ``epochs`` passes over ``train_loader``.

    Non-private and private training run the same code; ``privacy`` only changes where the
    batches come from (Poisson sampling) and how the gradient is made (clip + noise).
    ``progress`` is the caller's progress display (the CLI passes its bar); none by default."""
    if epochs < 1:
        from torchshield.errors import InputError

        raise InputError(f"epochs must be >= 1, got {epochs}")
    loss_fn = loss_fn or cross_entropy_loss
    model.to(device)
    start = time.perf_counter()
    history: list[float] = []
    steps = examples = 0
    stopped = False
    total = _maybe_len(train_loader)
    bar = _progress_bar(progress, epochs * total if total else None)
    with bar as advance:
        for epoch in range(1, epochs + 1):
            model.train()
            loss_sum, seen = 0.0, 0
            batches = privacy.loader(train_loader) if privacy is not None else train_loader
            for x, y in batches:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                if privacy is not None:
                    loss_sum += _private_step(model, x, y, loss_fn, regularizers, privacy, optimizer)
                else:
                    loss = loss_fn(model, x, y)
                    total_loss = _reduce(loss)
                    for reg in regularizers:
                        total_loss = total_loss + reg(model)
                    total_loss.backward()
                    optimizer.step()
                    loss_sum += float(loss.detach().sum()) if loss.dim() > 0 else float(loss.detach()) * len(y)
                seen += len(y)
                steps += 1
                advance(1)
            examples += seen
            history.append(loss_sum / max(seen, 1))
            extra = privacy.epoch_report() if privacy is not None else {}
            event = EpochEnd(epoch, epochs, history[-1], steps, time.perf_counter() - start, model, extra)
            if any(cb(event) is False for cb in callbacks):
                stopped = epoch < epochs
                break
    extra = privacy.epoch_report() if privacy is not None else {}
    return TrainResult(len(history), steps, examples, time.perf_counter() - start, history, stopped, extra)


def _private_step(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, regularizers: Sequence[Regularizer],
                  privacy: StepEngine, optimizer: torch.optim.Optimizer) -> float:
    """One DP-SGD step over a logical batch, in physical chunks when the engine asks for them."""
    loss_sum = 0.0
    physical = getattr(privacy, "physical", None)
    for xs, ys in (physical(x, y) if physical is not None else [(x, y)]):
        if not len(ys):
            continue  # an empty Poisson batch still takes a (noise-only) step below
        loss = loss_fn(model, xs, ys)
        if loss.dim() != 1 or loss.shape[0] != len(ys):
            from torchshield.errors import InputError

            raise InputError("under DP-SGD loss_fn must return per-example losses of shape [B]",
                             hint="compute the loss with reduction='none'")
        privacy.backward(model, loss)
        loss_sum += float(loss.detach().sum())
    _add_regularizer_grads(model, regularizers)
    privacy.step(optimizer)
    return loss_sum


def _add_regularizer_grads(model: nn.Module, regularizers: Sequence[Regularizer]) -> None:
    """Gradients of data-independent terms, accumulated on top of the private gradient."""
    if not regularizers:
        return
    reg = sum((r(model) for r in regularizers), torch.zeros(()))
    if not reg.requires_grad:  # e.g. a regularizer that only acts every few steps returned a constant
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(reg, params, allow_unused=True)
    for p, g in zip(params, grads):
        if g is None:
            continue
        p.grad = g if p.grad is None else p.grad.add_(g)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader | Iterable[tuple[Tensor, Tensor]], *,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    model.to(device)
    correct, loss_sum, n = 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    model.train(was_training)
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1), "examples": n}


def _maybe_len(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _progress_bar(factory: ProgressFactory | None, total: int | None) -> Any:
    if callable(factory):  # (a bare False from older callers means "no bar" too)
        return factory("training", total)
    from contextlib import nullcontext

    return nullcontext(lambda n=1: None)
