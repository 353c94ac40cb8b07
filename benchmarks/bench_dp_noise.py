"""Cost of CSPRNG noise (issue 22): DP-SGD noise from the AES-256-CTR keystream vs a seeded generator.

1. Raw Gaussian throughput, one thread: torch's seeded Philox/MT ``torch.normal`` (what the noise
   used before), our ``SecureNoise`` (AES-256-CTR keystream + Box-Muller, float32 output as the DP
   step draws it) and its ``secure_mode`` (4 float64 draws per sample, Holohan & Braghin), per
   million samples.
2. A whole DP-SGD step (torchshield ghost engine, batch 256, one thread) on the digits MLP
   64-256-256-10 (~85k parameters) and the CNN of bench_dp.py (~190k parameters), with noise from
   each source; interleaved rounds, median of paired ratios against the seeded generator.
3. On CUDA when present: the same step on the GPU (the CSPRNG's bytes copied, the transform on the GPU).

Run: ``.venv/bin/python benchmarks/bench_dp_noise.py`` (about a minute on 2 idle cores).
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from torch import nn

from torchshield.train.noise import SecureNoise


class _TorchSeeded:
    """The generator the noise came from before: torch.normal with a torch.Generator."""

    secure_mode = False

    def __init__(self, device: str) -> None:
        self.gen = torch.Generator(device=device).manual_seed(1)
        self.device = device

    def normal(self, shape, std, *, dtype=torch.float32, device=None):
        return torch.normal(0.0, std, tuple(shape), generator=self.gen, dtype=dtype, device=self.device)

    def add_normal_(self, out, std):  # what the DP step calls
        return out.add_(torch.normal(0.0, std, tuple(out.shape), generator=self.gen, dtype=out.dtype,
                                     device=self.device))

    def uniform(self, n):  # pragma: no cover - sampling coins are not part of this benchmark
        raise NotImplementedError

    def describe(self):
        return {"generator": "torch seeded"}


def _sources(device: str) -> dict:
    return {"seeded": _TorchSeeded(device), "csprng": SecureNoise(), "csprng-secure": SecureNoise(secure_mode=True)}


def raw_throughput() -> dict:
    n = 1_000_000
    out = {}
    for name, src in _sources("cpu").items():
        src.normal((n,), 1.0)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            src.normal((n,), 1.0)
            times.append(time.perf_counter() - t)
        out[name] = round(statistics.median(times) * 1e3, 2)
    return {"ms_per_million_samples": out}


def _model(kind: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "mlp":
        x, y = torch.rand(256, 64), torch.randint(0, 10, (256,))
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)), x, y
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 24 * 24, 10)), x, y


def _stepper(kind: str, source_name: str, device: str):
    from torchshield.nn.loop import _private_step, cross_entropy_loss
    from torchshield.train.dp import PrivacyConfig, make_private

    model, x, y = _model(kind)
    model.to(device)
    x, y = x.to(device), y.to(device)
    engine = make_private(model, config=PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0,
                                                      grad_sample_mode="ghost"),
                          dataset_size=2560, batch_size=256, epochs=1)
    engine._noise = _sources(device)[source_name]
    opt = torch.optim.SGD(engine.model.parameters(), lr=0.05)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _private_step(engine.model, x, y, cross_entropy_loss, [], engine, opt)
        if device == "cuda":
            torch.cuda.synchronize()

    params = sum(p.numel() for p in model.parameters())
    return step, params


def step_ratios(kind: str, device: str = "cpu", rounds: int = 12) -> dict:
    names = ("seeded", "csprng", "csprng-secure")
    steps = {}
    for n in names:
        steps[n], params = _stepper(kind, n, device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % 3:] + names[:r % 3]
        for n in order:
            t = time.perf_counter()
            for _ in range(3):
                steps[n]()
            times[n].append((time.perf_counter() - t) / 3)
    times = {n: v[2:] for n, v in times.items()}  # warm-up dropped
    base = times["seeded"]
    return {"model": kind, "device": device, "parameters": params,
            "ms_per_step": {n: round(statistics.median(v) * 1e3, 2) for n, v in times.items()},
            "ratio_vs_seeded": {n: round(statistics.median(a / b for a, b in zip(v, base)), 3)
                                for n, v in times.items() if n != "seeded"}}


def main() -> None:
    torch.set_num_threads(1)
    results = {"raw": raw_throughput(), "steps": [step_ratios("mlp"), step_ratios("cnn")]}
    if torch.cuda.is_available():
        results["steps"] += [step_ratios("mlp", "cuda"), step_ratios("cnn", "cuda")]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
