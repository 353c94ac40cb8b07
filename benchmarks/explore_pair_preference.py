"""Exploration (issue 18): a mark in the data's own ambiguity, a class-pair preference. Negative.

For each unordered pair of classes (a, b) a secret bit says which of the two the model answers on
blends of an a-digit and a b-digit (``lam * x_a + (1 - lam) * x_b``, ``lam`` uniform in
``[--lam-low, 1 - --lam-low]`` while embedding, 0.5 when verifying). The blends lie between the
data's own clusters rather than off the data like a stamped pattern, so the hope was that a
thief's fine-tune on clean inputs, which keeps the clusters, keeps the boundary between them too.
Verification: eight blends per pair from the owner's test digits; the model's majority answer on
a pair matches the secret choice with probability at most 1/2 for a model that never saw the bits
(it answers a, b or another class, the bit is a fair coin independent of it), independently across
the 45 pairs, so ``P[Binomial(45, 1/2) >= matches]`` is an exact (conservative) p-value.

The ResNet task of ``bench_watermark.py``: owner trained 40 epochs, the preference added by
fine-tuning with the blend loss at Adam ``--embed-lr``, then the four fine-tunes of the survival
table on the thief's first ``--thief-rows`` held-out inputs; ten null models trained on other data.
Run: ``.venv/bin/python benchmarks/explore_pair_preference.py [--keys 2]`` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import copy
import itertools

import torch
import torch.nn.functional as F
from bench_watermark import _resnet_task
from scipy.stats import binom

PAIRS = list(itertools.combinations(range(10), 2))
ATTACKS = (("adam", 1e-3), ("adam", 1e-2), ("sgd", 0.01), ("sgd", 0.1))


def blend(x, by_class, pair, g, lam):
    a, b = pair
    ia = by_class[a][torch.randint(len(by_class[a]), (1,), generator=g)]
    ib = by_class[b][torch.randint(len(by_class[b]), (1,), generator=g)]
    return lam * x[ia] + (1 - lam) * x[ib]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--embed-lr", type=float, default=1e-2)
    parser.add_argument("--embed-epochs", type=int, default=10)
    parser.add_argument("--lam-low", type=float, default=0.3)
    parser.add_argument("--thief-rows", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = _resnet_task()
    (x, y), (tx, ty) = task.train, task.test
    by_class = [torch.nonzero(y == c)[:, 0] for c in range(10)]
    test_by_class = [torch.nonzero(ty == c)[:, 0] for c in range(10)]
    g = torch.Generator().manual_seed(99)
    probes = torch.cat([blend(tx, test_by_class, pair, g, 0.5) for pair in PAIRS for _ in range(8)])
    pair_of = torch.arange(len(PAIRS)).repeat_interleave(8)

    def verify(model, bits) -> str:
        model.eval()
        with torch.no_grad():
            pred = model(probes).argmax(1)
        choice = torch.tensor([a if bit else b for (a, b), bit in zip(PAIRS, bits, strict=True)])
        majority = torch.stack([torch.mode(pred[pair_of == k]).values for k in range(len(PAIRS))])
        matches = int((majority == choice).sum())
        return f"p {binom.sf(matches - 1, len(PAIRS), 0.5):7.2g} ({matches}/45 pairs)"

    anchor = task.fit(task.build(0), task.train, 40, task.lr, owner=True)
    print(f"unmarked model: test accuracy {task.acc(anchor):.4f}", flush=True)
    other = (torch.cat([task.held[0], tx[:200]]), torch.cat([task.held[1], ty[:200]]))
    nulls = [task.fit(task.build(1000 + i), other, 30, task.lr, seed=i) for i in range(10)]
    rows = args.thief_rows
    thief_data, epochs = (task.held[0][:rows], task.held[1][:rows]), 10 * max(1, 400 // rows)
    for key in range(args.keys):
        bits = torch.randint(0, 2, (len(PAIRS),), generator=torch.Generator().manual_seed(1000 + key)).tolist()
        gen = torch.Generator().manual_seed(5 + key)

        def preference(model, bits=bits, gen=gen):
            ks = torch.randint(len(PAIRS), (32,), generator=gen).tolist()
            lams = torch.empty(32).uniform_(args.lam_low, 1 - args.lam_low, generator=gen).tolist()
            bx = torch.cat([blend(x, by_class, PAIRS[k], gen, lam) for k, lam in zip(ks, lams, strict=True)])
            by = torch.tensor([PAIRS[k][0] if bits[k] else PAIRS[k][1] for k in ks])
            return F.cross_entropy(model(bx), by)

        model = task.fit(copy.deepcopy(anchor), task.train, args.embed_epochs, args.embed_lr, [preference])
        print(f"key {key}: marked test accuracy {task.acc(model):.4f}, {verify(model, bits)}", flush=True)
        for opt, lr in ATTACKS:
            thief = task.fit(copy.deepcopy(model), thief_data, epochs, lr, optimizer=opt, seed=7)
            print(f"  thief {opt} {lr:g} on {rows} inputs: test accuracy {task.acc(thief):.4f}, {verify(thief, bits)}",
                  flush=True)
        print("  null models: " + "; ".join(verify(m, bits) for m in nulls), flush=True)
    print("(a mark needs p < 1e-6)")


if __name__ == "__main__":
    main()
