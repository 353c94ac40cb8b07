"""DP-SGD: per-example clipping + Gaussian noise + Poisson sampling, with Opacus' accountants.

Threat model. The adversary sees the released model (every intermediate model, in fact) and
knows every training example but one; DP-SGD bounds how much the model can tell them about
that one example: (epsilon, delta)-DP for the add/remove-one-example relation. That holds only
if (1) each example's gradient is clipped to ``max_grad_norm`` before summing, (2) Gaussian
noise of std ``noise_multiplier * max_grad_norm`` is added to each sum, (3) batches are Poisson
samples (each example in independently with rate q), and (4) the accountant sees every step.
Noise and sampling coins come from a CSPRNG (``torchshield.train.noise``: the AES-256-CTR keystream
keyed from ``os.urandom``); ``secure_mode`` also defends the Gaussian sampler against
floating-point attacks. A fixed ``seed`` (an attacker who knew it could subtract the noise) is
refused unless ``insecure_seed_for_tests: true``, which the privacy record then carries.

Why our own clipping engine. Opacus' default ``hooks`` mode materialises a ``[B, *param]``
gradient per parameter; on CPU that is memory traffic on fresh pages and makes a step 41x a
non-private one for an MLP (docs/benchmarks.md). ``ghost`` (the default, also under ``auto``) is
our book-keeping engine, :mod:`torchshield.train.per_example`: Linear, Embedding, norms,
convolutions and tied weights, with a layer it cannot clip refused before training. Opacus' hooks
run only when ``grad_sample_mode`` asks for them. Accounting stays with Opacus
(``torchshield.privacy.accounting``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from torchshield.errors import InputError
from torchshield.privacy.accounting import (
    ACCOUNTANTS,
    check_budget,
    epsilon_and_accountant,
    epsilon_for,
    noise_multiplier_for,
)
from torchshield.train.noise import NoiseSource, noise_source
from torchshield.train.per_example import OpacusHooks, PerExampleClipper, fix_model

__all__ = ["GRAD_SAMPLE_MODES", "PrivacyConfig", "PrivateTraining", "fix_model", "make_private"]

GRAD_SAMPLE_MODES = ("auto", "functorch", "ghost", "hooks")


@dataclass(frozen=True)
class PrivacyConfig:
    """The ``privacy:`` section of a training config."""

    epsilon: float
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    grad_sample_mode: str = "auto"
    max_physical_batch_size: int | None = None
    noise_multiplier: float | None = None  # derived from epsilon when absent
    seed: int | None = None  # tests only: a known seed lets anyone subtract the noise
    insecure_seed_for_tests: bool = False  # the explicit opt-in ``seed`` needs; recorded in the bundle
    secure_mode: bool = False  # also defend the Gaussian sampler against floating-point attacks (4x samples)

    def __post_init__(self) -> None:
        check_budget(self.epsilon, self.delta)
        if not isinstance(self.secure_mode, bool) or not isinstance(self.insecure_seed_for_tests, bool):
            raise InputError("privacy.secure_mode and privacy.insecure_seed_for_tests must be true or false")
        if self.seed is not None and self.insecure_seed_for_tests is not True:
            raise InputError("privacy.seed makes the DP noise predictable: anyone who knows it can subtract the "
                             "noise, so the epsilon would not hold",
                             hint="remove privacy.seed (noise comes from a CSPRNG), or, in tests only, add "
                                  "privacy.insecure_seed_for_tests: true (recorded in the bundle)")
        if not self.max_grad_norm > 0:
            raise InputError(f"privacy.max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.accountant not in ACCOUNTANTS:
            raise InputError(f"privacy.accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise InputError(f"privacy.grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, "
                             f"got {self.grad_sample_mode!r}")
        if self.max_physical_batch_size is not None and self.max_physical_batch_size < 1:
            raise InputError("privacy.max_physical_batch_size must be >= 1")




@dataclass
class PrivateTraining:
    """A :class:`torchshield.nn.loop.StepEngine` that makes each step (epsilon, delta)-DP.

    Build it with :func:`make_private` *before* the optimizer (the model may be fixed)."""

    model: nn.Module
    config: PrivacyConfig
    noise_multiplier: float
    sample_rate: float
    expected_batch_size: float
    planned_steps: int
    mode: str
    messages: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    steps: int = 0
    _engine: Any = None
    _sums: dict[nn.Parameter, Tensor] = field(default_factory=dict)
    _noise: NoiseSource | None = None  # Gaussian noise
    _coins: NoiseSource | None = None  # Poisson sampling
    _trainable: list[tuple[str, nn.Module]] = field(default_factory=list)

    # -- StepEngine -------------------------------------------------------------------------
    def loader(self, train_loader: Any) -> Iterator[tuple[Tensor, Tensor]]:
        """Poisson batches over this process' data: each example independently with rate q.

        Written here instead of Opacus' DPDataLoader so that tensors are indexed in one go
        (no per-example collation) and each torch.distributed rank samples its own shard."""
        x, y = _tensors(train_loader)
        n = len(y)
        per_epoch = max(1, round(1.0 / self.sample_rate))
        for _ in range(per_epoch):
            mask = torch.from_numpy(self._coins.uniform(n) <= self.sample_rate)
            idx = mask.nonzero().squeeze(1)
            yield x[idx], y[idx]

    def physical(self, x: Tensor, y: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Virtual batches: split a logical batch so memory stays bounded; one noise draw per logical batch."""
        size = self.config.max_physical_batch_size or max(len(y), 1)
        for start in range(0, max(len(y), 1), size):
            self._engine.reset()
            yield x[start:start + size], y[start:start + size]

    def backward(self, model: nn.Module, per_example_loss: Tensor) -> None:
        for name, m in self._trainable:  # both engines skip layers in eval(): they would get noise only
            if not m.training:
                raise InputError(f"layer {name} ({type(m).__name__}) has trainable parameters but is in eval() "
                                 "mode: under DP-SGD it would get no gradient, only noise",
                                 hint="put it in train() mode, or freeze it (requires_grad=False)")
        for p, g in self._engine.clipped_sum(per_example_loss, self.config.max_grad_norm).items():
            self._sums[p] = g if p not in self._sums else self._sums[p].add_(g)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        std = self.noise_multiplier * self.config.max_grad_norm
        dist = _distributed()
        for p in (q for q in self.model.parameters() if q.requires_grad):
            total = self._sums.pop(p, None)
            if total is None:
                total = torch.zeros_like(p)
            if dist is None or dist.get_rank() == 0:  # noise added once, by rank 0, before the sum
                self._noise.add_normal_(total, std)  # total is this step's own sum (or zeros)
            if dist is not None:
                dist.all_reduce(total)
            grad = total.div_(self.expected_batch_size)
            p.grad = grad if p.grad is None else p.grad.add_(grad)  # p.grad holds regularizer terms only
        self._sums.clear()  # sums of frozen parameters (counted in the norms, conservatively) are dropped
        optimizer.step()
        self.steps += 1

    def epoch_report(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon(), "delta": self.config.delta, "steps": self.steps}

    # -- reporting --------------------------------------------------------------------------
    def epsilon(self) -> float:
        return epsilon_for([(self.noise_multiplier, self.sample_rate, self.steps)], delta=self.config.delta,
                           accountant=self.config.accountant)

    def record(self) -> dict[str, Any]:
        """The bundle manifest's ``privacy`` slot."""
        epsilon, accountant = epsilon_and_accountant([(self.noise_multiplier, self.sample_rate, self.steps)],
                                                     delta=self.config.delta, accountant=self.config.accountant)
        return {
            "mechanism": "DP-SGD (Poisson sampling, per-example clipping, Gaussian noise)",
            "epsilon": epsilon,
            "delta": self.config.delta,
            "target_epsilon": self.config.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "accountant": accountant,
            "max_grad_norm": self.config.max_grad_norm,
            "mode": self.mode,
            "model_fixes": self.fixes,
            "neighbouring": "add/remove one example",
            "noise": self._noise.describe(),
            **({"insecure_seed_for_tests": True, "warning": "noise seeded for tests: anyone who knows the seed "
                "can subtract it; the epsilon above does not hold"} if self.config.seed is not None else {}),
        }

    def close(self) -> None:
        """Remove the hooks; the model is an ordinary module again."""
        self._engine.close()


def _distributed() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _tensors(loader: Any) -> tuple[Tensor, Tensor]:
    dataset = getattr(loader, "dataset", loader)
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, tuple) and len(dataset) == 2:
        return dataset
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(list(xs)), torch.as_tensor(ys)


def make_private(model: nn.Module, *, config: PrivacyConfig, dataset_size: int, batch_size: int, epochs: int,
                 ) -> PrivateTraining:
    """Prepare ``model`` for DP-SGD to ``config.epsilon`` over ``epochs`` of ``dataset_size`` examples.

    ``batch_size`` is the expected (global) logical batch; the sample rate is
    ``batch_size / dataset_size``. Create the optimizer on ``result.model`` afterwards.

    Data-parallel: inside an initialised ``torch.distributed`` group, ``dataset_size`` is the
    total over all ranks and each rank passes its own shard to ``fit``; every rank Poisson-samples
    its shard at rate q, the clipped sums are all-reduced, and rank 0 alone adds the noise, so
    the result is one DP-SGD step over the union (same accounting as a single process)."""
    check_budget(config.epsilon, config.delta, dataset_size)
    if not 0 < batch_size <= dataset_size:
        raise InputError(f"batch_size must be in [1, {dataset_size}], got {batch_size}")
    model, fixes = fix_model(model)
    dist = _distributed()
    if dist is not None:  # every rank starts from rank 0's weights, so the summed steps stay in sync
        for p in model.parameters():
            dist.broadcast(p.data, src=0)
    q = batch_size / dataset_size
    steps = epochs * max(1, round(1.0 / q))
    sigma = config.noise_multiplier or noise_multiplier_for(epsilon=config.epsilon, delta=config.delta,
                                                            sample_rate=q, steps=steps,
                                                            accountant=config.accountant)
    messages = [f"model fixed for DP: {c}" for c in fixes]
    mode = "ghost" if config.grad_sample_mode in ("auto", "ghost") else config.grad_sample_mode
    if config.noise_multiplier is not None:
        spent = epsilon_for([(sigma, q, steps)], delta=config.delta, accountant=config.accountant)
        if spent > config.epsilon:
            raise InputError(f"privacy.noise_multiplier={sigma} spends epsilon {spent:.3f} > {config.epsilon} "
                             f"over {steps} steps", hint="omit noise_multiplier to derive it from epsilon")
    # our engine refuses, naming it, a trainable layer it cannot clip: before any step (and after
    # the budget check, so that a refused run leaves no hooks on the caller's model)
    try:
        engine = PerExampleClipper(model) if mode == "ghost" else OpacusHooks(model, mode)
    except InputError as e:  # name the user's layer, not only what Opacus' fixes made of it
        mine = [c for c in fixes if f"layer {c.split(':')[0]} " in e.message]
        if not mine:
            raise
        raise InputError(f"{e.message} (Opacus' fixes replaced {'; '.join(mine)})", hint=e.hint) from None
    seed = config.seed
    if seed is not None and dist is not None:
        seed += 1000 * dist.get_rank()  # each rank samples its own shard
    trainable = [(name or "<root>", m) for name, m in model.named_modules()
                 if any(p.requires_grad for p in m.parameters(recurse=False))]
    return PrivateTraining(model, config, sigma, q, q * dataset_size, steps, mode, messages, fixes,
                           _engine=engine, _noise=noise_source(seed, secure_mode=config.secure_mode),
                           _coins=noise_source(None if seed is None else seed + 1), _trainable=trainable)

