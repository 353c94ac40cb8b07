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

Issue 18 adds two real architectures (``run_task``): a ResNet-style CNN (the hand-written
torchvision BasicBlock of tests/byom_models.py; torchvision does not install against this torch)
on digits as 3 x 8 x 8 images, and a BERT-style classifier (``BertForSequenceClassification``
from a tiny config, random init) on a synthetic 3-class token task. Marks there: white-box and
keyed trigger set added by ``embed`` to the trained model (what ``model watermark embed`` does),
and the keyed trigger set added at training time; trigger inputs from the model's input spec.

Run: ``.venv/bin/python benchmarks/bench_watermark.py`` (all three; about 20 minutes of CPU on
one thread), ``--arch digits|resnet|bert`` for one, ``--quick`` for a CI-sized run (two
fine-tune rates, one distillation, 10 null models, one digits seed); ``--null-models`` and
``--seeds`` change the sizes.
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


def digits_main(args) -> None:
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



# --- issue 18: a ResNet-style CNN and a BERT-style classifier --------------------------------------
#
# Marks: the white-box mark and the keyed-pattern trigger set added to a trained model by
# ``embed`` (what ``model watermark embed`` does: a fine-tune with the mark's regulariser), and the
# keyed-pattern trigger set added at training time (the regulariser from the first epoch).
# Trigger inputs come from the model's input spec (3 x 8 x 8 floats in [0, 1]; 16 token ids in
# [0, 200)). One seed per architecture; false positives on ``--null-models`` independent models,
# each trained one epoch from its own seed.


class Task:
    """One architecture: data (train / thief's held-out / test), a builder, training settings."""

    def __init__(self, name, train, held, test, build, inputs, *, epochs, lr, embed_epochs, embed_lr,
                 scale_attack, obfuscate_target, wb_strength=1.0, mark_epochs=None, restart_every=None):
        self.name, self.train, self.held, self.test = name, train, held, test
        self.build, self.inputs, self.epochs, self.lr = build, inputs, epochs, lr
        self.embed_epochs, self.embed_lr = embed_epochs, embed_lr
        self.scale_attack, self.obfuscate_target = scale_attack, obfuscate_target
        self.wb_strength = wb_strength
        self.mark_epochs = mark_epochs or epochs  # training from scratch with the trigger regulariser
        self.restart_every = restart_every  # owner's training: a fresh Adam every this many epochs

    def loader(self, part, seed=0, batch=64):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*part), batch_size=batch, shuffle=True,
                                           generator=torch.Generator().manual_seed(seed))

    def acc(self, model) -> float:
        model.eval()
        with torch.no_grad():
            return float((model(self.test[0]).argmax(1) == self.test[1]).float().mean())

    def fit(self, model, part, epochs, lr, regs=(), optimizer="adam", seed=0, owner=False):
        if owner and self.restart_every and epochs > self.restart_every:
            for start in range(0, epochs, self.restart_every):
                self.fit(model, part, min(self.restart_every, epochs - start), lr, regs, optimizer, seed + start)
            return model.eval()
        model.train()
        opt = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam"
               else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
        fit(model, self.loader(part, seed), epochs=epochs, optimizer=opt, regularizers=list(regs), progress=False)
        return model.eval()


def _resnet_task() -> Task:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from byom_models import (
        ResNetMini,  # the hand-written torchvision BasicBlock (torchvision does not install)
    )

    from torchshield.model.watermark.inputs import TriggerInputs

    def rgb(part):
        return part[0].reshape(-1, 1, 8, 8).repeat(1, 3, 1, 1).contiguous(), part[1]

    def build(seed):
        torch.manual_seed(seed)
        return ResNetMini(num_classes=10, widths=(8, 16))

    def scale(model):  # conv -> BatchNorm: conv rows x s, running mean x s, running var x s^2 (eval mode)
        thief = copy.deepcopy(model)
        g = torch.Generator().manual_seed(4)
        mods = dict(thief.named_modules())
        with torch.no_grad():
            for name, conv in mods.items():
                if not isinstance(conv, nn.Conv2d) or conv.bias is not None:
                    continue
                bn_name = name[:-1] + "1" if name.endswith("downsample.0") else name.replace("conv", "bn")
                bn = mods.get(bn_name)
                if not isinstance(bn, nn.BatchNorm2d):
                    continue
                s = torch.exp(torch.randn(conv.out_channels, generator=g))
                conv.weight.mul_(s[:, None, None, None])
                bn.running_mean.mul_(s)
                bn.running_var.mul_(s * s)  # eps is not rescaled: outputs move by a hair, as a thief accepts
        return thief

    return Task("ResNet-style CNN (BasicBlocks 8-16 channels, BatchNorm, residual +=), digits as 3x8x8",
                rgb(TRAIN), rgb(HELD), rgb(TEST), build, TriggerInputs((3, 8, 8), 0.0, 1.0),
                epochs=15, lr=2e-3, embed_epochs=6, embed_lr=1e-3, scale_attack=scale,
                obfuscate_target=lambda m: m, wb_strength=4.0)  # 1.0: 89/128 bits after 3 x 6 epochs, refused


VOCAB, LENGTH = 1000, 16  # the model's vocabulary; the data uses ids 2-199 of it (see _tokens)
DATA_IDS = 200  # noise tokens are 8..199: a real task uses a fraction of its vocabulary; --vocab 200 uses all


def _tokens(n: int, seed: int):
    """Synthetic 3-class token task: three copies of the class token (5, 6 or 7) at random positions
    among noise tokens 8..199, [CLS] = 2 first. Learnt to 100 % in a few seconds. Ids from 200 up
    (with --vocab above 200) never occur, as most of a real vocabulary never occurs in one task."""
    import numpy as np

    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    x = g.integers(8, DATA_IDS, (n, LENGTH))
    x[:, 0] = 2
    for i in range(n):
        x[i, g.choice(np.arange(1, LENGTH), 3, replace=False)] = 5 + y[i]
    return torch.tensor(x), torch.tensor(y)


def _bert_task(vocab: int = VOCAB) -> Task:
    import transformers

    from torchshield.model.watermark.inputs import TriggerInputs, logits_module

    transformers.logging.set_verbosity_error()
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=3)

    def build(seed):
        torch.manual_seed(seed)
        return logits_module(transformers.BertForSequenceClassification(cfg))

    def scale(model):  # attention: Q rows x s, K rows / s; V rows x t, output columns / t
        thief = copy.deepcopy(model)
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for layer in thief.inner.bert.encoder.layer:
                att = layer.attention
                s = torch.exp(torch.randn(32, generator=g))
                t = torch.exp(torch.randn(32, generator=g))
                for lin, f in ((att.self.query, s), (att.self.key, 1 / s), (att.self.value, t)):
                    lin.weight.mul_(f[:, None])
                    lin.bias.mul_(f)
                att.output.dense.weight.div_(t[None, :])
        return thief

    tr, he, te = _tokens(1200, 0), _tokens(400, 1), _tokens(400, 2)
    return Task("BERT-style classifier (HF BertForSequenceClassification from config: 2 layers, hidden 32, "
                f"2 heads, vocab {vocab}), synthetic 3-class token task on ids 2-199", tr, he, te, build,
                TriggerInputs((LENGTH,), 0.0, float(vocab - 1), tokens=True),
                epochs=9, lr=2e-3, embed_epochs=10, embed_lr=1e-3, scale_attack=scale,
                obfuscate_target=lambda m: m.inner, mark_epochs=21,
                restart_every=3)  # one Adam for 10-15 epochs stayed on the task's plateau (0.66); restarts: 1.0  # vocab 40, 15 epochs: p 4.9e-7, barely


def _unused_id_noise(task: Task):
    """The adaptive attack on token trigger sets (issue 18: a thief who knows our method). The
    thief's 400 sequences, plus a copy of each with half its positions (never [CLS]) overwritten by
    ids its own data never uses, same label: the fine-tune then teaches the model to ignore such
    ids, which is what our pattern tokens are."""
    from torchshield.model.watermark.keyed import default_pattern_tokens, unseen_ids

    x, y = task.held
    unused = torch.tensor(unseen_ids(x, int(task.inputs.low), int(task.inputs.high)))
    if len(unused) == 0:
        return task.held
    g = torch.Generator().manual_seed(11)
    m = default_pattern_tokens(x.shape[1])
    noisy = x.clone()
    for row in noisy:
        where = 1 + torch.randperm(x.shape[1] - 1, generator=g)[:m]
        row[where] = unused[torch.randint(0, len(unused), (m,), generator=g)]
    return torch.cat([x, noisy]), torch.cat([y, y])


def _task_attacks(task: Task, model, *, quick: bool):
    from torchshield.model.watermark.robustness import dequantized_state

    yield "as embedded", model, None
    rates = (("adam", 1e-3), ("adam", 1e-2), ("sgd", 0.01), ("sgd", 0.1))
    for opt, lr in rates[1::2] if quick else rates:
        yield f"fine-tune 10 ep {opt} lr {lr:g}", task.fit(copy.deepcopy(model), task.held, 10, lr, optimizer=opt,
                                                            seed=7), None
    if task.inputs.tokens:  # a thief who knows the method fine-tunes with unused ids sprinkled into its data
        for opt, lr in (("adam", 1e-2),) if quick else (("adam", 1e-3), ("adam", 1e-2)):
            yield (f"fine-tune 10 ep {opt} lr {lr:g}, unused ids added", task.fit(
                copy.deepcopy(model), _unused_id_noise(task), 10, lr, optimizer=opt, seed=7), None)
    pruned = prune_magnitude(copy.deepcopy(model), 0.7)
    yield "prune 70 %", pruned, None
    yield "prune 70 % + fine-tune 5 ep adam 1e-3", task.fit(copy.deepcopy(pruned), task.held, 5, 1e-3, seed=7), None
    q = quantize_int8(model)
    yield "int8 dynamic quantisation", q, dequantized_state(q)
    yield "weight noise 10 % of each tensor's std", _noise(model, 0.1), None
    permuted = copy.deepcopy(model)
    obfuscate_module(task.obfuscate_target(permuted), generate_master_key())
    yield "permutation (obfuscate_module, thief's key)", permuted, None
    yield "permutation + positive rescaling", task.scale_attack(permuted), None
    tensors, _ = obfuscate(task.obfuscate_target(model), generate_master_key())
    if task.obfuscate_target(model) is not model:  # the wrapper's names carry a prefix
        tensors = {f"inner.{k}": v for k, v in tensors.items()}
    yield "obfuscate, another key, names scrambled", permuted, tensors
    yield "distil, soft T=2, thief's held-out inputs", distill(model, task.build(98), task.held[0]), None
    if not quick:
        everything = torch.cat([task.train[0], task.held[0]])
        yield "distil, soft T=2, train + held-out inputs", distill(model, task.build(99), everything), None


def _whitebox_read(model, record, key, state):
    tensors = state if state is not None else {k: v.detach() for k, v in model.state_dict().items()}
    return verify_whitebox(tensors, record, key)


def run_task(task: Task, args) -> None:
    from torchshield.errors import CheckFailed
    from torchshield.model.watermark import embed, make_regularizer

    key = generate_master_key()
    start = time.time()
    anchor = task.fit(task.build(0), task.train, task.epochs, task.lr, owner=True)
    base = task.acc(anchor)
    print(f"\n#### {task.name}\nanchor (unmarked, seed 0, {task.epochs} epochs): test accuracy {base:.4f}; "
          f"embed: Adam {task.embed_lr:g}, {task.embed_epochs} epochs a round")
    marks = {}
    for name, section in (("white-box (embed)", {"method": "whitebox", "strength": task.wb_strength}),
                          ("keyed trigger set (embed)", {"method": "trigger"})):
        model = copy.deepcopy(anchor).train()
        try:
            record = embed(model, task.loader(task.train), key, section, epochs=task.embed_epochs,
                           lr=task.embed_lr, inputs=task.inputs)
        except CheckFailed as exc:  # what the CLI would answer (exit 1): reported, not hidden
            print(f"\n== {name}: embed refused: {exc}")
            continue
        marks[name] = (model.eval(), record)
    model = task.build(0)
    regs, record = make_regularizer({"method": "trigger"}, model, key, data=task.train[0], inputs=task.inputs)
    marks["keyed trigger set (train time)"] = (task.fit(model, task.train, task.mark_epochs, task.lr, regs,
                                                         owner=True), record)
    nulls = [task.fit(task.build(1000 + i), task.train, 1, task.lr, seed=i) for i in range(args.null_models)]
    for name, (model, record) in marks.items():
        print(f"\n== {name}: accuracy {task.acc(model):.4f} (cost {100 * (base - task.acc(model)):+.2f} pp vs "
              f"anchor); record params: " + ", ".join(f"{k}={v}" for k, v in record.params.items()
                                                      if k in ("bits", "carrier", "patterns", "triggers",
                                                               "input_shape", "input_dtype", "low", "high")))
        print(f"{'attack':48s} {'thief acc':>9s} {'agree':>6s} {'p-value':>10s} present")
        for attack, thief, state in _task_attacks(task, model, quick=args.quick):
            if record.method == "whitebox":
                v = _whitebox_read(thief, record, key, state)
            else:
                v = verify_trigger(model_predictor(thief), record, key)
            print(f"{attack:48s} {task.acc(thief):9.4f} {v.agreement:6.3f} {v.p_value:10.2e} {v.present}")
        null_p = [(_whitebox_read(m, record, key, None) if record.method == "whitebox"
                   else verify_trigger(model_predictor(m), record, key)).p_value for m in nulls]
        print(f"false positives on {len(nulls)} independent models: {sum(p < record.threshold for p in null_p)} "
              f"at p < {record.threshold:g}, {sum(p < 0.01 for p in null_p)} at p < 0.01; min p {min(null_p):.3g}, "
              f"median {statistics.median(null_p):.3g}")
    print(f"({task.name.split(' (')[0]}: {time.time() - start:.0f} s wall)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3, help="digits: seeds per mark")
    parser.add_argument("--null-models", type=int, default=60)
    parser.add_argument("--arch", choices=("all", "digits", "resnet", "bert"), default="all")
    parser.add_argument("--quick", action="store_true", help="CI size: fewer attacks, seeds and null models")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="bert: vocabulary size (the data uses ids 2-199; "
                        "200 = every id occurs in the data, the worst case for token trigger sets)")
    parser.add_argument("--embed-lr", type=float, default=None, help="resnet/bert: learning rate of 'embed' "
                        "(default: the task's, 1e-3)")
    args = parser.parse_args()
    if args.vocab < DATA_IDS:
        parser.error(f"--vocab must be at least {DATA_IDS} (the data uses ids up to {DATA_IDS - 1})")
    if args.quick:
        args.seeds, args.null_models = 1, min(args.null_models, 10)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    if args.arch in ("all", "digits"):
        digits_main(args)
    for name, build in (("resnet", _resnet_task), ("bert", lambda: _bert_task(args.vocab))):
        if args.arch in ("all", name):
            task = build()
            task.embed_lr = args.embed_lr or task.embed_lr
            run_task(task, args)


if __name__ == "__main__":
    main()
