"""Watermark survival against a thief who knows the method (issues 6 and 18), sklearn digits.

For each mark (white-box ``unit-mean`` carrier, the default; white-box Uchida ``mean`` carrier,
the pre-issue-18 default, for comparison; noise trigger set (Adi et al.); keyed-pattern trigger
set, the ``embed`` default): accuracy cost vs the same MLP trained without a mark (same seeds),
then the p-value after each attack applied to the seed-0 marked model: fine-tuning with a fresh
optimiser on the thief's held-out data at several rates (ten epochs), magnitude pruning 70 % with
and without fine-tuning, int8 dynamic quantisation, Gaussian weight noise, a function-preserving
permutation of every hidden layer's units, permutation + positive per-unit rescaling, our own
obfuscation with another key (units permuted and rescaled by powers of two; names scrambled for
the white-box marks), and distillation into a new MLP on clean inputs (soft labels on all 1300
train + held-out inputs, soft labels on the thief's 400, hard labels). Then false positives on
independently trained models. The thief's test accuracy is printed beside each attack (a
fine-tune that costs more than 2 points is not a fair removal).

Run: ``.venv/bin/python benchmarks/bench_watermark.py`` (about 5 minutes of CPU on one thread);
``--null-models`` and ``--seeds`` change the sizes.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch import nn

from torchshield.crypto.keys import generate_master_key
from torchshield.model.obfuscate import obfuscate, obfuscate_module
from torchshield.model.watermark import make_regularizer, model_predictor, verify_trigger, verify_whitebox
from torchshield.model.watermark.robustness import dequantized_state, distill, prune_magnitude, quantize_int8
from torchshield.nn.loop import fit

EPOCHS = 30


def _data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = torch.tensor(x / 16.0, dtype=torch.float32)[order], torch.tensor(y)[order]
    return (x[:900], y[:900]), (x[900:1300], y[900:1300]), (x[1300:], y[1300:])


TRAIN, HELD, TEST = _data()
MARKS = {
    "white-box unit-mean (default)": {"method": "whitebox"},
    "white-box mean (Uchida, old default)": {"method": "whitebox", "carrier": "mean", "bits": 128,
                                             "layers": ["2.weight"]},
    "trigger noise (Adi)": {"method": "trigger", "design": "noise", "triggers": 100},
    "trigger keyed-pattern (embed default)": {"method": "trigger", "design": "keyed-pattern"},
}


def _loader(part, seed=0):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*part), batch_size=64, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def _train(seed: int, section=None, key=None, epochs=EPOCHS):
    model = _mlp(seed)
    regs, record = make_regularizer(section, model, key, data=TRAIN[0]) if section else ([], None)
    start = time.process_time()
    fit(model, _loader(TRAIN, seed), epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        regularizers=regs, progress=False)
    return model.eval(), record, time.process_time() - start


def _acc(model) -> float:
    with torch.no_grad():
        return float((model(TEST[0]).argmax(1) == TEST[1]).float().mean())


def _verify(model, record, key, *, state=None):
    if record.method == "whitebox":
        return verify_whitebox(state if state is not None else
                               {k: v.detach() for k, v in model.state_dict().items()}, record, key)
    return verify_trigger(model_predictor(model), record, key)


def _tune(model, optimizer: str, lr: float, epochs: int = 10):
    thief = copy.deepcopy(model).train()
    opt = (torch.optim.Adam(thief.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(thief.parameters(), lr=lr, momentum=0.9))
    fit(thief, _loader(HELD, 7), epochs=epochs, optimizer=opt, progress=False)
    return thief.eval()


def _noise(model, scale: float):
    thief = copy.deepcopy(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in thief.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std())
    return thief


def _permute(model, *, scale: bool):
    thief = copy.deepcopy(model)
    g = torch.Generator().manual_seed(3)
    linears = [m for m in thief if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for a, b in zip(linears, linears[1:]):
            perm = torch.randperm(a.out_features, generator=g)
            s = torch.exp(torch.randn(a.out_features, generator=g)) if scale else torch.ones(a.out_features)
            a.weight.copy_(a.weight[perm] * s[:, None])
            a.bias.copy_(a.bias[perm] * s)
            b.weight.copy_(b.weight[:, perm] / s[None, :])
    return thief


def _attacks(model):
    """(name, thief model, state to read for white-box or None)."""
    yield "as embedded", model, None
    for opt, lr in (("adam", 1e-3), ("adam", 1e-2), ("sgd", 0.01), ("sgd", 0.1)):
        yield f"fine-tune 10 ep {opt} lr {lr:g}", _tune(model, opt, lr), None
    pruned = prune_magnitude(copy.deepcopy(model), 0.7)
    yield "prune 70 %", pruned, None
    yield "prune 70 % + fine-tune 5 ep adam 1e-3", _tune(pruned, "adam", 1e-3, 5), None
    q = quantize_int8(model)
    yield "int8 dynamic quantisation", q, dequantized_state(q)
    yield "weight noise 10 % of each tensor's std", _noise(model, 0.1), None
    yield "permutation of hidden units", _permute(model, scale=False), None
    yield "permutation + positive rescaling", _permute(model, scale=True), None
    other = copy.deepcopy(model)
    obfuscate_module(other, generate_master_key())
    yield "our obfuscation, another key (names kept)", other, None
    tensors, _ = obfuscate(model, generate_master_key())
    yield "our obfuscation, another key, names scrambled", other, tensors
    everything = torch.cat([TRAIN[0], HELD[0]])
    yield "distil, soft T=2, 1300 clean inputs", distill(model, _mlp(99), everything), None
    yield "distil, soft T=2, thief's 400 inputs", distill(model, _mlp(98), HELD[0]), None
    yield "distil, hard labels (T=0.05), 1300 inputs", distill(model, _mlp(97), everything, temperature=0.05), None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--null-models", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    key = generate_master_key()
    runs = {name: [] for name in ("anchor", *MARKS)}
    for s in range(args.seeds):  # interleaved so that drifting machine load hits all alike
        runs["anchor"].append(_train(s))
        for name, section in MARKS.items():
            runs[name].append(_train(s, section, key))
    base_acc = statistics.mean(_acc(m) for m, _, _ in runs["anchor"])
    base_time = statistics.median(t for *_, t in runs["anchor"])
    print(f"anchor: unmarked MLP 64-256-128-10, {EPOCHS} epochs, accuracy {base_acc:.4f} "
          f"(mean of {args.seeds} seeds), train CPU time median {base_time:.2f} s")
    nulls = [_train(100 + i, epochs=10)[0] for i in range(args.null_models)]
    for name in MARKS:
        acc = statistics.mean(_acc(m) for m, _, _ in runs[name])
        t = statistics.median(r[2] for r in runs[name])
        print(f"\n== {name} ==")
        print(f"accuracy {acc:.4f} (cost {100 * (base_acc - acc):+.2f} pp vs anchor), training-time ratio "
              f"{t / base_time:.2f}")
        model, record, _ = runs[name][0]
        print(f"{'attack (seed-0 marked model)':48s} {'thief acc':>9s} {'agree':>6s} {'p-value':>10s} present")
        for attack, thief, state in _attacks(model):
            v = _verify(thief, record, key, state=state)
            print(f"{attack:48s} {_acc(thief):9.4f} {v.agreement:6.3f} {v.p_value:10.2e} {v.present}")
        null_p = [_verify(m, record, key).p_value for m in nulls]
        print(f"false positives on {len(nulls)} independent models: {sum(p < record.threshold for p in null_p)} "
              f"at p < {record.threshold:g}, {sum(p < 0.01 for p in null_p)} at p < 0.01; "
              f"min p {min(null_p):.3g}, median {statistics.median(null_p):.3g}")


if __name__ == "__main__":
    main()
