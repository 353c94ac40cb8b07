"""Differential privacy goals (issue 4), each against its anchor in the same run.

1. DP-SGD step time over a non-private step, one thread, batch 256: (i) MLP 64-256-256-10 on
   digits, (ii) CNN conv(1->16,k3)-conv(16->32,k3)-linear on 1x28x28. Variants: non-private,
   torchshield (book-keeping ghost clipping), Opacus 1.6 `hooks` (its default) and Opacus `ghost`.
   Interleaved rounds, order rotated each round, warm-up rounds dropped, median of paired ratios.
2. Extra peak RSS of 10 steps per variant, each in its own subprocess.
3. Accountant agreement with the reference values (anchors-measured.md D12/D13).
4. Membership audit cost: LiRA with 8 shadow models on digits.

Run: ``.venv/bin/python benchmarks/bench_dp.py`` (about 3 minutes on 2 idle cores).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

VARIANTS = ("non-private", "torchshield", "opacus-hooks", "opacus-ghost")
REFERENCE = [  # q, sigma, steps, RDP eps, PRV eps (Opacus 1.6.0, delta 1e-5)
    (256 / 60000, 1.1, 14062, 2.5965558689607486, 2.3917436959452183),
    (0.01, 1.0, 10000, 6.712738297403128, 6.198043855918416),
    (0.004, 4.0, 1000, 0.1359043144075971, 0.11005754729558866),
    (0.1, 0.8, 500, 28.249903237754236, 25.93464807329633),
]


def _setup(kind: str, variant: str):
    """A model, a fixed batch of 256 and a ``step()`` closure for one variant."""
    torch.manual_seed(0)
    if kind == "mlp":
        from sklearn.datasets import load_digits

        x_all, y_all = load_digits(return_X_y=True)
        x = torch.tensor(x_all[:256] / 16.0, dtype=torch.float32)
        y = torch.tensor(y_all[:256])
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    else:
        x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
        model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(32 * 24 * 24, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    if variant == "non-private":
        def step() -> None:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return step
    if variant == "torchshield":
        from torchshield.nn.loop import _private_step, cross_entropy_loss
        from torchshield.train.dp import PrivacyConfig, make_private

        engine = make_private(model, config=PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0),
                              dataset_size=2560, batch_size=256, epochs=1)
        opt = torch.optim.SGD(engine.model.parameters(), lr=0.05)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            _private_step(engine.model, x, y, cross_entropy_loss, (), engine, opt)
        return step
    from opacus import PrivacyEngine

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=256)
    mode = variant.split("-")[1]
    out = PrivacyEngine().make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
                                       max_grad_norm=1.0, grad_sample_mode=mode, criterion=nn.CrossEntropyLoss())
    module, dp_opt = out[0], out[1]
    criterion = out[2] if mode == "ghost" else nn.CrossEntropyLoss()
    dp_opt.expected_batch_size = 256

    def step() -> None:
        dp_opt.zero_grad()
        criterion(module(x), y).backward()
        dp_opt.step()
    return step


def step_times(kind: str, rounds: int, per_block: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    steps = {v: _setup(kind, v) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds + warmup):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for v in order:
            t = time.perf_counter()
            for _ in range(per_block):
                steps[v]()
            times[v].append((time.perf_counter() - t) / per_block * 1000)
    out = {}
    base = times["non-private"][warmup:]
    for v in VARIANTS:
        mine = times[v][warmup:]
        out[v] = {"median_ms": statistics.median(mine),
                  "paired_ratio": statistics.median(m / b for m, b in zip(mine, base))}
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _rss_child(kind: str, variant: str, steps: int) -> None:
    """Peak RSS caused by the steps alone: the import-time peak is reset via /proc/self/clear_refs."""
    torch.set_num_threads(1)
    step = _setup(kind, variant)
    step()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    before = _status_kb("VmRSS")
    for _ in range(steps):
        step()
    peak = _status_kb("VmHWM")
    print(json.dumps({"extra_mb": (peak - before) / 1024, "peak_mb": peak / 1024}))


def extra_rss(kind: str, steps: int) -> dict[str, dict[str, float]]:
    res = {}
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--rss", kind, v, str(steps)], capture_output=True,
                             text=True, check=True).stdout
        res[v] = json.loads(out.strip().splitlines()[-1])
    return res


def accountants() -> list[dict[str, float]]:
    from torchshield.privacy.accounting import epsilon_for

    rows = []
    for q, sigma, steps, rdp, prv in REFERENCE:
        ours_rdp = epsilon_for([(sigma, q, steps)], delta=1e-5, accountant="rdp")
        ours_prv = epsilon_for([(sigma, q, steps)], delta=1e-5, accountant="prv")
        rows.append({"q": q, "sigma": sigma, "steps": steps, "rdp": ours_rdp, "rdp_ref": rdp,
                     "prv": ours_prv, "prv_ref": prv})
    return rows


def audit_time(shadows: int = 8) -> dict[str, float]:
    from torchshield.privacy.audit import audit_membership
    from torchshield.train import build_model, fit, load_dataset

    data = load_dataset("sklearn:digits")

    def train(x, y, seed):
        torch.manual_seed(seed)
        m = build_model({"type": "mlp", "hidden": [128]}, in_shape=data.input_shape, num_classes=10)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
        fit(m, loader, epochs=20, optimizer=torch.optim.Adam(m.parameters(), 1e-2), progress=False)
        return m

    n = 600
    members = (data.train.x[:n], data.train.y[:n])
    target = train(*members, 0)
    non_members = (data.test.x, data.test.y)
    t = time.perf_counter()
    rep = audit_membership(target, members, non_members, train_shadow=train, shadows=shadows)
    total = time.perf_counter() - t
    t = time.perf_counter()
    train(data.train.x[:n], data.train.y[:n], 99)
    one = time.perf_counter() - t
    lira = next(a for a in rep.attacks if a.attack == "lira")
    return {"seconds": total, "one_training_s": one, "ratio_to_shadow_trainings": total / (shadows * one),
            "lira_auc": lira.auc, "lira_tpr_1pct": lira.tpr_at_1pct_fpr}


def main() -> None:
    torch.set_num_threads(1)
    print("DP-SGD step time, batch 256, 1 thread (median ms; paired ratio to non-private)")
    for kind, rounds, block in (("mlp", 9, 10), ("cnn", 5, 2)):
        res = step_times(kind, rounds, block)
        for v, r in res.items():
            print(f"  {kind} {v:13s} {r['median_ms']:8.2f} ms  {r['paired_ratio']:6.2f}x")
        mine, hooks = res["torchshield"]["median_ms"], res["opacus-hooks"]["median_ms"]
        print(f"  {kind}: torchshield is {hooks / mine:.1f}x faster than Opacus hooks, "
              f"{res['opacus-ghost']['median_ms'] / mine:.2f}x faster than Opacus ghost")
    print("extra peak RSS over 10 steps (MB)")
    for kind, steps in (("mlp", 10), ("cnn", 3)):
        for v, r in extra_rss(kind, steps).items():
            print(f"  {kind} {v:13s} +{r['extra_mb']:.0f} MB (peak {r['peak_mb']:.0f} MB)")
    print("accountants vs reference (delta 1e-5)")
    for r in accountants():
        print(f"  q={r['q']:.5f} sigma={r['sigma']} steps={r['steps']}: RDP {r['rdp']:.4f} (ref {r['rdp_ref']:.4f}, "
              f"diff {abs(r['rdp'] - r['rdp_ref']):.1e})  PRV {r['prv']:.4f} (ref {r['prv_ref']:.4f}, "
              f"diff {abs(r['prv'] - r['prv_ref']):.1e})")
    a = audit_time()
    print(f"membership audit, LiRA with 8 shadow models on digits: {a['seconds']:.1f} s "
          f"({a['ratio_to_shadow_trainings']:.2f}x the 8 shadow trainings alone; LiRA AUC {a['lira_auc']:.3f}, "
          f"TPR@1%FPR {a['lira_tpr_1pct']:.3f})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rss":
        _rss_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
