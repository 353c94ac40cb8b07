"""DP-SGD on real architectures (issue 22): DP step / non-private step, next to Opacus ghost clipping.

Models: a BERT-small classifier (4 layers, hidden 256, 4 heads, vocabulary 30522), a GPT-2 LM at
GPT-2-small width (hidden 768, 12 heads, vocabulary 50257, tied head; ``--gpt2-layers`` of them,
2 on the CPU by default, 12 on CUDA) and a ResNet-18-style CNN (torchvision's layout with
GroupNorm, in-place residuals) on 32x32 images. Batch 32, sequence 128 unless told otherwise.

Variants, each a full optimizer step on the same fixed batch:
- ``non-private``: forward, mean loss, backward, SGD step;
- ``torchshield``: ``make_private`` + the training loop's private step (per-example clipping by
  ``train/per_example.py``, noise, SGD step);
- ``torchshield-clip``: the same without the Gaussian draw (what per-example clipping alone costs;
  the draw is the noise generator's business, measured on its own line);
- ``opacus-ghost``: Opacus 1.6 ``grad_sample_mode="ghost"`` with its two documented workarounds
  applied so it runs at all: no in-place ops (``out = out + identity``, ReLU not in place) and
  ``position_ids`` (and BERT's ``token_type_ids``) passed as contiguous ``[B, L]`` tensors.
  Opacus refuses tied parameters in ghost mode ("Parameter tying is not supported with Ghost
  Clipping"), so its GPT-2 has an untied LM head (a third workaround; one more vocab x hidden
  matrix to train, so its step does slightly more work than ours).
Interleaved rounds, order rotated each round, warm-up rounds dropped, median of paired ratios.
Peak memory: ``torch.cuda.max_memory_allocated`` over one step on CUDA; on the CPU the peak RSS
of a child process running a few steps (``--memory``).

Run: ``python benchmarks/bench_dp_models.py --device cuda --quick`` (GPU, a minute) or
``python benchmarks/bench_dp_models.py --device cpu --quick --threads 1`` (CPU, small sizes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

VARIANTS = ("non-private", "torchshield", "torchshield-clip", "opacus-ghost")


@dataclass(frozen=True)
class Sizes:
    batch: int
    seq: int
    image: int
    gpt2_layers: int
    device: str


# -- models ------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """torchvision's BasicBlock with GroupNorm; ``inplace`` False is Opacus' workaround."""

    def __init__(self, c_in: int, c_out: int, stride: int, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.GroupNorm(32, c_out)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.GroupNorm(32, c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.GroupNorm(32, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.inplace:
            out += identity
        else:
            out = out + identity
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, inplace: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.GroupNorm(32, 64)
        self.relu = nn.ReLU(inplace=inplace)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, c_in = [], 64
        for i, w in enumerate((64, 128, 256, 512)):
            blocks += [BasicBlock(c_in, w, 1 if i == 0 else 2, inplace), BasicBlock(w, w, 1, inplace)]
            c_in = w
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.layers(x).mean((2, 3)))


def _model(kind: str, sizes: Sizes, opacus: bool) -> nn.Module:
    """``opacus``: the model with Opacus' workarounds (no in-place residual, GPT-2 head untied)."""
    import transformers

    transformers.logging.set_verbosity_error()
    if kind == "bert":
        cfg = transformers.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=1024, num_labels=2, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
        return transformers.BertForSequenceClassification(cfg)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_layer=sizes.gpt2_layers, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, tie_word_embeddings=not opacus)
        return transformers.GPT2LMHeadModel(cfg)
    return ResNet18(inplace=not opacus)


class _Task:
    """A model's batch and per-example loss; ``opacus`` applies the position-ids workaround."""

    def __init__(self, kind: str, sizes: Sizes, opacus: bool) -> None:
        g = torch.Generator().manual_seed(0)
        b, t = sizes.batch, sizes.seq
        self.kind = kind
        self.kwargs: dict[str, torch.Tensor] = {}
        if kind == "resnet":
            self.x = torch.randn(b, 3, sizes.image, sizes.image, generator=g)
            self.y = torch.randint(0, 10, (b,), generator=g)
        else:
            vocab = 30522 if kind == "bert" else 50257
            self.x = torch.randint(0, vocab, (b, t), generator=g)
            self.y = torch.randint(0, 2, (b,), generator=g) if kind == "bert" else self.x
            if opacus:  # contiguous: Opacus' embedding norm sampler calls .view on the ids
                self.kwargs["position_ids"] = torch.arange(t).expand(b, t).contiguous()
                if kind == "bert":
                    self.kwargs["token_type_ids"] = torch.zeros(b, t, dtype=torch.long)
        self.x, self.y = self.x.to(sizes.device), self.y.to(sizes.device)
        self.kwargs = {k: v.to(sizes.device) for k, v in self.kwargs.items()}

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "resnet":
            return model(x)
        kwargs = {k: v[: len(x)] for k, v in self.kwargs.items()}
        out = model(input_ids=x, **kwargs).logits
        return out[:, :-1] if self.kind == "gpt2" else out

    def per_example(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.logits(model, x)
        if self.kind == "gpt2":
            tok = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1),
                                              reduction="none")
            return tok.view(len(x), -1).mean(1)
        return nn.functional.cross_entropy(logits, y, reduction="none")


def _setup(kind: str, variant: str, sizes: Sizes) -> Callable[[], None]:
    torch.manual_seed(0)
    opacus = variant == "opacus-ghost"
    model = _model(kind, sizes, opacus).to(sizes.device).train()
    task = _Task(kind, sizes, opacus)
    x, y = task.x, task.y
    if variant == "non-private":
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            task.per_example(model, x, y).mean().backward()
            opt.step()
        return step
    if variant.startswith("torchshield"):
        from torchshield.nn.loop import _private_step
        from torchshield.train.dp import PrivacyConfig, make_private

        engine = make_private(model, config=PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0),
                              dataset_size=sizes.batch * 10, batch_size=sizes.batch, epochs=1)
        assert engine.mode == "ghost", engine.messages
        opt = torch.optim.SGD(engine.model.parameters(), lr=1e-3)
        if variant == "torchshield-clip":
            def clip_step() -> None:
                opt.zero_grad(set_to_none=True)
                for p, g in engine._engine.clipped_sum(task.per_example(engine.model, x, y), 1.0).items():
                    p.grad = g.div_(sizes.batch)
                opt.step()
            return clip_step

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            _private_step(engine.model, x, y, task.per_example, (), engine, opt)
        return step
    import warnings

    from opacus import PrivacyEngine

    warnings.filterwarnings("ignore")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    data = torch.utils.data.TensorDataset(x.cpu(), y.cpu())
    loader = torch.utils.data.DataLoader(data, batch_size=sizes.batch)
    module, dp_opt, criterion, _ = PrivacyEngine().make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
        grad_sample_mode="ghost", criterion=nn.CrossEntropyLoss(), poisson_sampling=False)
    dp_opt.expected_batch_size = sizes.batch

    def opacus_step() -> None:
        dp_opt.zero_grad(set_to_none=True)
        logits = task.logits(module, x)
        if kind == "gpt2":
            flat = logits.reshape(-1, logits.shape[-1])
            loss = criterion(flat, y[:, 1:].reshape(-1), shape=logits.shape[:2])
        else:
            loss = criterion(logits, y)
        loss.backward()
        dp_opt.step()
    return opacus_step


# -- measuring ---------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_times(kind: str, sizes: Sizes, rounds: int, warmup: int = 1,
               variants: tuple[str, ...] = VARIANTS) -> dict[str, dict[str, float]]:
    steps: dict[str, Callable[[], None]] = {}
    errors: dict[str, str] = {}
    for v in variants:
        try:
            steps[v] = _setup(kind, v, sizes)
            steps[v]()  # first step outside the clock (lazy allocations, kernels)
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run is reported, not hidden
            errors[v] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            steps.pop(v, None)
    names = [v for v in variants if v in steps]
    times: dict[str, list[float]] = {v: [] for v in names}
    for r in range(rounds + warmup):
        for v in names[r % len(names):] + names[:r % len(names)]:
            _sync(sizes.device)
            t = time.perf_counter()
            steps[v]()
            _sync(sizes.device)
            times[v].append((time.perf_counter() - t) * 1000)
    out: dict[str, dict[str, float]] = {}
    base = times["non-private"][warmup:]
    for v in names:
        mine = times[v][warmup:]
        out[v] = {"median_ms": statistics.median(mine),
                  "paired_ratio": statistics.median(m / b for m, b in zip(mine, base))}
        if sizes.device.startswith("cuda"):
            out[v]["peak_mb"] = _cuda_peak(steps[v])
    for v, e in errors.items():
        out[v] = {"error": e}  # type: ignore[dict-item]
    return out


def noise_ms(kind: str, sizes: Sizes) -> tuple[int, float, float]:
    """One Gaussian draw over all parameters: with the CSPRNG added in place on the device, as
    ``PrivateTraining.step`` makes it (``add_normal_``), and with torch's seeded generator (what a
    DP-SGD without a CSPRNG pays), median ms of 3 each."""
    from torchshield.train.noise import noise_source

    n = sum(p.numel() for p in _model(kind, sizes, False).parameters())
    gen, source = torch.Generator().manual_seed(0), noise_source()
    target = torch.zeros(n, device=sizes.device)
    secure, seeded = [], []
    for _ in range(3):
        t = time.perf_counter()
        source.add_normal_(target, 1.0)
        _sync(sizes.device)
        secure.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        torch.normal(0.0, 1.0, (n,), generator=gen).to(sizes.device)
        _sync(sizes.device)
        seeded.append((time.perf_counter() - t) * 1000)
    return n, statistics.median(secure), statistics.median(seeded)


def _cuda_peak(step: Callable[[], None]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _rss_child(kind: str, variant: str, sizes: Sizes, threads: int) -> None:
    torch.set_num_threads(threads)
    step = _setup(kind, variant, sizes)
    step()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    before = _status_kb("VmRSS")
    for _ in range(2):
        step()
    peak = _status_kb("VmHWM")
    print(json.dumps({"extra_mb": (peak - before) / 1024, "peak_mb": peak / 1024}))


def cpu_peaks(kind: str, sizes: Sizes, threads: int) -> dict[str, dict[str, float] | str]:
    res: dict[str, dict[str, float] | str] = {}
    for v in VARIANTS:
        cmd = [sys.executable, __file__, "--rss", kind, v, "--device", "cpu", "--batch", str(sizes.batch),
               "--seq", str(sizes.seq), "--image", str(sizes.image), "--gpt2-layers", str(sizes.gpt2_layers),
               "--threads", str(threads)]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        res[v] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else "failed"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="batch 8, sequence 32, GPT-2 2 layers, 3 rounds")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--gpt2-layers", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--models", default="bert,gpt2,resnet")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="non-private is always run")
    ap.add_argument("--threads", default="1,2", help="CPU thread counts, comma-separated")
    ap.add_argument("--memory", action="store_true", help="CPU: peak RSS per variant in child processes")
    ap.add_argument("--rss", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    sizes = Sizes(batch=args.batch or (8 if args.quick else 32), seq=args.seq or (32 if args.quick else 128),
                  image=args.image, gpt2_layers=args.gpt2_layers or (2 if args.quick or not cuda else 12),
                  device=args.device)
    threads = [int(t) for t in args.threads.split(",")]
    if args.rss:
        _rss_child(args.rss[0], args.rss[1], sizes, threads[0])
        return
    rounds = args.rounds or (3 if args.quick else 7)
    report: dict[str, object] = {"sizes": sizes.__dict__, "rounds": rounds, "torch": torch.__version__}
    print(f"DP step / non-private step on {args.device}: batch {sizes.batch}, seq {sizes.seq}, image "
          f"{sizes.image}, GPT-2 layers {sizes.gpt2_layers}, {rounds} rounds (median ms, paired ratio)")
    for n_threads in ([0] if cuda else threads):
        if n_threads:
            torch.set_num_threads(n_threads)
        for kind in args.models.split(","):
            chosen = ("non-private", *(v for v in args.variants.split(",") if v in VARIANTS[1:]))
            res = step_times(kind, sizes, rounds, variants=chosen)
            report[f"{kind}/{n_threads or 'cuda'}"] = res
            for v, r in res.items():
                if "error" in r:
                    print(f"  {kind:6s} {n_threads or 'gpu'}t {v:12s} FAILED {r['error']}")
                    continue
                peak = f"  peak {r['peak_mb']:.0f} MB" if "peak_mb" in r else ""
                print(f"  {kind:6s} {n_threads or 'gpu'}t {v:16s} {r['median_ms']:9.1f} ms  "
                      f"{r['paired_ratio']:5.2f}x{peak}")
            n, noise, seeded = noise_ms(kind, sizes)
            report[f"{kind}/{n_threads or 'cuda'}/noise_ms"] = noise
            report[f"{kind}/{n_threads or 'cuda'}/noise_seeded_ms"] = seeded
            print(f"  {kind:6s}: one Gaussian draw over its {n / 1e6:.1f}M parameters: {noise:.1f} ms with the "
                  f"CSPRNG (as the DP step draws it), {seeded:.1f} ms with torch's seeded generator")
            if "torchshield" in res and "median_ms" in res.get("opacus-ghost", {}):
                speedup = res["opacus-ghost"]["median_ms"] / res["torchshield"]["median_ms"]
                print(f"  {kind:6s}: torchshield is {speedup:.2f}x "
                      f"faster than Opacus ghost")
            if args.memory and not cuda:
                peaks = cpu_peaks(kind, sizes, n_threads)
                report[f"{kind}/{n_threads}/rss"] = peaks
                print("  " + kind + " peak RSS: " + ", ".join(
                    f"{v} {p['peak_mb']:.0f} MB (+{p['extra_mb']:.0f})" if isinstance(p, dict) else f"{v} {p}"
                    for v, p in peaks.items()))
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
