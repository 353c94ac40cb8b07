"""Attack speed and strength against the hand-written floor and torchattacks, in one run.

Setup follows docs/benchmarks.md "Adversarial robustness" and the anchor measurements: sklearn
digits upsampled to 28x28, a small CNN (conv 1->16 k3, conv 16->32 k3, linear 18432->10), batch
256, Linf eps 0.1, PGD-40 with alpha = eps/4 and no random start, FGSM one step of eps; one torch
thread; variants interleaved with rotating order, medians over rounds, paired ratios.

Also: robust accuracy of our PGD vs torchattacks' on 500 test images (strength goal: ours <=
theirs + 0.5 points), and adversarial training time and the robust accuracy it buys (MLP).

The standard ensemble vs torchattacks' AutoAttack (version "standard": APGD-CE, APGD-T, FAB-T,
Square-5000) on the same model and the same 500 digits test images (8x8, the zoo's MLP 64-64-10
and a small CNN), Linf eps 0.1 and L2 eps 0.5: robust accuracy (goal: ours <= theirs + 0.5
points) and wall time, median over --rounds runs. Ours runs twice: at torchattacks' budget
(10 APGD and FAB steps, as its AutoAttack defaults) and at the paper's (100 steps, 9 targets, 5000
queries, our default); the examples each of our stages fooled first are printed too.

    .venv/bin/python benchmarks/bench_attacks.py [--quick] [--autoattack-only] [--rounds 3]

torchattacks is optional (benchmark and reference tests only): `.venv/bin/pip install --no-deps
torchattacks==3.5.1` (its declared dependencies pin requests~=2.25 and pull torchvision; it imports
neither). Missing, its columns are skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from torchshield.nn.loop import fit
from torchshield.robust.attacks import FGSM, PGD
from torchshield.robust.training import make_loss

try:
    import torchattacks
except ImportError:  # optional
    torchattacks = None


def data() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1297], y[:1297], x[1297:], y[1297:]


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 24 * 24, 10))


def hand_pgd(model, x, y, eps, alpha, steps):
    """The floor: per step forward, CE, autograd.grad on the input, sign step, project, clamp."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def interleaved(variants: dict, rounds: int, calls: int) -> dict[str, list[float]]:
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 1):  # round 0 warms up
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t = time.perf_counter()
            for _ in range(calls):
                variants[n]()
            if r:
                times[n].append((time.perf_counter() - t) / calls)
    return times


def report_speed(title: str, times: dict[str, list[float]], base: str = "hand") -> None:
    print(f"\n{title}")
    for n, ts in times.items():
        paired = statistics.median(a / b for a, b in zip(ts, times[base], strict=True))
        print(f"  {n:14} median {statistics.median(ts) * 1000:8.1f} ms   ratio to {base} "
              f"{statistics.median(ts) / statistics.median(times[base]):.3f}x (paired {paired:.3f}x)")


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def digits8() -> tuple[torch.Tensor, ...]:
    """Digits 8x8 in [0, 1] as (N, 1, 8, 8), the fixed 1297/500 split of the unit tests."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1297], y[:1297], x[1297:], y[1297:]


def autoattack_comparison(rounds: int, n: int) -> None:
    """Ours ("standard" ensemble) vs torchattacks.AutoAttack(version="standard"), same model and data."""
    from torchshield.robust.attacks import StandardEnsemble, StandardEnsembleL2

    xtr, ytr, xt, yt = digits8()
    xt, yt = xt[:n], yt[:n]
    models = {"mlp 64-64-10": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
              "cnn 8c3-lin": lambda: nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10))}
    print(f"\nStandard ensemble vs torchattacks AutoAttack (standard), digits 8x8, {n} test images, "
          f"time = median of {rounds}")
    for label, build in models.items():
        torch.manual_seed(0)
        model = build()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
        fit(model, loader, epochs=10, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), progress=False)
        model.eval()
        print(f"  {label}: clean {accuracy(model, xt, yt):.2%}")
        for norm, eps in (("Linf", 0.1), ("L2", 0.5)):
            ours_cls = StandardEnsemble if norm == "Linf" else StandardEnsembleL2
            variants = {
                "ours (10 steps)": lambda c=ours_cls, e=eps, m=model: c(m, eps=e, steps=10, seed=0),
                "ours (default)": lambda c=ours_cls, e=eps, m=model: c(m, eps=e, seed=0),
            }
            if torchattacks:
                variants["torchattacks AA"] = lambda nm=norm, e=eps, m=model: torchattacks.AutoAttack(
                    m, norm=nm, eps=e, version="standard", n_classes=10, seed=0)
            results: dict[str, tuple[float, list[float]]] = {}
            stages: dict[str, dict[str, int]] = {}
            for r in range(rounds):
                names = list(variants)
                for name in names[r % len(names):] + names[:r % len(names)]:
                    torch.manual_seed(0)
                    t = time.perf_counter()
                    attack = variants[name]()
                    adv = attack(xt, yt)
                    secs = time.perf_counter() - t
                    stages[name] = getattr(attack, "last_counts", None) or {}
                    acc = accuracy(model, adv, yt)
                    prev = results.get(name, (acc, []))
                    results[name] = (prev[0], [*prev[1], secs])
                    assert abs(prev[0] - acc) < 1e-9, "seeded runs must repeat"
            line = f"    {norm} eps {eps}:"
            for name, (acc, times) in results.items():
                line += f"  {name} {acc:.2%} robust, {statistics.median(times):.1f} s;"
            if torchattacks:
                gap = (results["ours (default)"][0] - results["torchattacks AA"][0]) * 100
                line += f"  ours(default) - theirs = {gap:+.1f} points"
            print(line, flush=True)
            for name, counts in stages.items():
                if counts:
                    print(f"      {name} fooled first: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    ap.add_argument("--speed-only", action="store_true", help="only the PGD/FGSM timings")
    ap.add_argument("--autoattack-only", action="store_true", help="only the ensemble vs AutoAttack comparison")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds of the AutoAttack comparison")
    ap.add_argument("--examples", type=int, default=500, help="test images of the AutoAttack comparison")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.autoattack_only:
        autoattack_comparison(1 if args.quick else args.rounds, args.examples)
        return
    xtr, ytr, xt, yt = data()
    model = cnn()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    fit(model, loader, epochs=2 if args.quick else 5, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        progress=False)
    model.eval()
    print(f"CNN clean test accuracy {accuracy(model, xt, yt):.2%}  (torchattacks "
          f"{'3.5.1 present' if torchattacks else 'not installed: skipped'})")
    xb, yb = xt[:256], yt[:256]
    eps, alpha = 0.1, 0.025
    ours_pgd = PGD(model, eps=eps, steps=40, alpha=alpha, random_start=False)
    ours_fgsm = FGSM(model, eps=eps)
    pgd_variants = {"hand": lambda: hand_pgd(model, xb, yb, eps, alpha, 40), "torchshield": lambda: ours_pgd(xb, yb)}
    fgsm_variants = {"hand": lambda: hand_pgd(model, xb, yb, eps, eps, 1), "torchshield": lambda: ours_fgsm(xb, yb)}
    if torchattacks:
        ta_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=40, random_start=False)
        ta_fgsm = torchattacks.FGSM(model, eps=eps)
        pgd_variants["torchattacks"] = lambda: ta_pgd(xb, yb)
        fgsm_variants["torchattacks"] = lambda: ta_fgsm(xb, yb)
    report_speed("PGD-40, batch 256, eps 0.1 (per batch)", interleaved(pgd_variants, 3 if args.quick else 7, 1))
    report_speed("FGSM, batch 256, eps 0.1 (per batch)", interleaved(fgsm_variants, 3 if args.quick else 9, 10))

    if args.speed_only:
        return
    print("\nRobust accuracy, 500 test images, PGD-40 (alpha eps/4, no random start) / FGSM")
    for e in (0.05, 0.1, 0.3):
        ours = PGD(model, eps=e, steps=40, alpha=e / 4, random_start=False)(xt, yt)
        ours_rs = PGD(model, eps=e, steps=40, alpha=e / 4, random_start=True, restarts=2, seed=0)(xt, yt)
        line = (f"  eps {e:<5} ours {accuracy(model, ours, yt):.2%}  ours+random start x2 "
                f"{accuracy(model, ours_rs, yt):.2%}  hand {accuracy(model, hand_pgd(model, xt, yt, e, e / 4, 40), yt):.2%}"
                f"  ours FGSM {accuracy(model, FGSM(model, eps=e)(xt, yt), yt):.2%}")
        if torchattacks:
            ta = torchattacks.PGD(model, eps=e, alpha=e / 4, steps=40, random_start=False)(xt, yt)
            agree = float((model(ours).argmax(1) == model(ta).argmax(1)).double().mean())
            line += (f"  torchattacks {accuracy(model, ta, yt):.2%}  label agreement {agree:.2%}"
                     f"  max |diff| {float((ours - ta).abs().max()):.1e}")
        print(line)

    print("\nAdversarial training on digits 8x8, MLP 64-64-10, 10 epochs, batch 64; robust acc. = PGD-20 eps 0.1")
    from sklearn.datasets import load_digits

    d = load_digits()
    x8 = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y8 = torch.tensor(d.target)
    perm = torch.randperm(len(y8), generator=torch.Generator().manual_seed(0))
    x8, y8 = x8[perm], y8[perm]
    base_time = None
    for label, section in [("standard", None), ("pgd-at (7 steps)", {"method": "pgd", "eps": 0.1, "steps": 7}),
                           ("trades (7 steps)", {"method": "trades", "eps": 0.1, "steps": 7}),
                           ("fast (FGSM+rs)", {"method": "fast", "eps": 0.1}),
                           ("gaussian 0.25", {"gaussian_noise": 0.25})]:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        ld = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x8[:1297], y8[:1297]), batch_size=64,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
        t = time.perf_counter()
        fit(m, ld, epochs=10, optimizer=torch.optim.Adam(m.parameters(), lr=1e-2),
            loss_fn=make_loss(section, bounds=(0.0, 1.0)) if section else None, progress=False)
        secs = time.perf_counter() - t
        base_time = base_time or secs
        m.eval()
        adv = PGD(m, eps=0.1, steps=20, seed=0)(x8[1297:], y8[1297:])
        print(f"  {label:18} {secs:6.2f} s ({secs / base_time:4.1f}x)  clean {accuracy(m, x8[1297:], y8[1297:]):.2%}"
              f"  robust {accuracy(m, adv, y8[1297:]):.2%}")

    autoattack_comparison(1 if args.quick else args.rounds, args.examples)


if __name__ == "__main__":
    main()
