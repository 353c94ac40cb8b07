"""Watermark goals on sklearn digits (issue 6), against the unmarked model in the same run.

Measures: accuracy cost and training-time overhead of embedding (anchor: the same MLP trained
without a mark, same seeds); verification p-values after fine-tuning with a fresh optimiser
(5 epochs on held-out data), magnitude pruning 20/40/60 %, int8 dynamic quantisation and, for
the trigger set, distillation into a new model; and p-values on 20 independently trained models
(false positives). Run: ``.venv/bin/python benchmarks/bench_watermark.py`` (about 2 minutes).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import torch
from torch import nn

from torchshield.crypto.keys import generate_master_key
from torchshield.model.watermark import make_regularizer, model_predictor, verify_trigger, verify_whitebox
from torchshield.model.watermark.robustness import (
    dequantized_state,
    distill,
    fine_tune,
    prune_magnitude,
    quantize_int8,
)

SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 30
NULL_MODELS = 20


def _data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = torch.tensor(x / 16.0, dtype=torch.float32)[order], torch.tensor(y)[order]
    return (x[:900], y[:900]), (x[900:1300], y[900:1300]), (x[1300:], y[1300:])


TRAIN, HELD, TEST = _data()


def _loader(part, seed=0):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*part), batch_size=64, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def _train(seed: int, section=None, key=None, epochs=EPOCHS):
    from torchshield.nn.loop import fit

    model = _mlp(seed)
    regs, record = make_regularizer(section, model, key) if section else ([], None)
    start = time.process_time()  # CPU time of this (single-threaded) process: robust to other load
    fit(model, _loader(TRAIN, seed), epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        regularizers=regs, progress=False)
    return model.eval(), record, time.process_time() - start


def _acc(model) -> float:
    with torch.no_grad():
        return float((model(TEST[0]).argmax(1) == TEST[1]).float().mean())


def _verify(model, record, key, *, quantized=False):
    if record.method == "whitebox":
        state = dequantized_state(model) if quantized else {k: v.detach() for k, v in model.state_dict().items()}
        return verify_whitebox(state, record, key)
    return verify_trigger(model_predictor(model), record, key)


def _attacks(model, record, key):
    rows = [("embedded", model, False)]
    rows.append(("fine-tune 5 ep (fresh Adam, held-out)", fine_tune(copy.deepcopy(model), _loader(HELD, 7)), False))
    for amount in (0.2, 0.4, 0.6):
        rows.append((f"prune {int(amount * 100)}%", prune_magnitude(copy.deepcopy(model), amount), False))
    rows.append(("int8 dynamic quantisation", quantize_int8(model), True))
    if record.method == "trigger":
        student = distill(model, _mlp(99), torch.cat([TRAIN[0], HELD[0]]))
        rows.append(("distillation into a new MLP", student, False))
    out = []
    for name, m, q in rows:
        v = _verify(m, record, key, quantized=q)
        out.append((name, _acc(m), v.agreement, v.p_value, v.present))
    return out


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    key = generate_master_key()
    sections = {"whitebox": {"method": "whitebox", "bits": 128},
                "trigger": {"method": "trigger", "triggers": 100}}
    # interleave marked and unmarked runs so drifting machine load hits all alike
    runs = {name: [] for name in ("anchor", *sections)}
    for s in SEEDS:
        runs["anchor"].append(_train(s))
        for method, section in sections.items():
            runs[method].append(_train(s, section, key))
    base_acc = statistics.mean(_acc(m) for m, _, _ in runs["anchor"])
    base_time = statistics.median(t for *_, t in runs["anchor"])
    print(f"anchor: unmarked MLP, {EPOCHS} epochs, accuracy {base_acc:.4f} (mean of {len(SEEDS)} seeds), "
          f"train CPU time median {base_time:.2f} s")
    nulls = [_train(100 + i, epochs=10)[0] for i in range(NULL_MODELS)]
    for method, section in sections.items():
        acc = statistics.mean(_acc(m) for m, _, _ in runs[method])
        t = statistics.median(r[2] for r in runs[method])
        print(f"\n== {method} ==")
        print(f"accuracy {acc:.4f} (cost {100 * (base_acc - acc):+.2f} pp vs anchor), train time median "
              f"{t:.2f} s CPU, overhead ratio {t / base_time:.3f}")
        model, record, _ = runs[method][0]
        print(f"{'condition':40s} {'test acc':>8s} {'agree':>6s} {'p-value':>10s} present")
        for name, a, agree, p, present in _attacks(model, record, key):
            print(f"{name:40s} {a:8.4f} {agree:6.3f} {p:10.2e} {present}")
        null_p = [_verify(m, record, key).p_value for m in nulls]
        flagged = sum(p < record.threshold for p in null_p)
        print(f"false positives on {NULL_MODELS} independent models: {flagged}; min p-value {min(null_p):.3g}, "
              f"median {statistics.median(null_p):.3g}")


if __name__ == "__main__":
    main()
