"""Exploration (issue 18): does the owner's *training data* stay visible in a thief's fine-tuned copy?

A negative result, kept so it can be re-run. Dataset inference (Maini et al., ICLR 2021) needs no
mark at all: a model derived from the owner's should fit the owner's training records better than
records drawn from the same pool but held back. When the owner splits its records into "trained
on" and "held back" at random (keyed, so a suspect cannot know the split), a model that never saw
either half treats the two halves exchangeably, so a rank test of the suspect's true-class
log-probability, trained-on against held-back, has an exact null (a randomisation test; the
asymptotic Mann-Whitney p-value is printed here, enough to see the size of the effect).

The ResNet task of ``bench_watermark.py``: the owner's 900 training digits split ``--in`` / rest at
random per ``--split-seed``, the owner trains 40 epochs on its half, then the four fine-tunes of the
survival table run on the thief's first ``--thief-rows`` held-out inputs (10 x 400 / rows epochs);
null models are trained on other data (the 400 held-out + 200 test digits).
Run: ``.venv/bin/python benchmarks/explore_dataset_inference.py [--split-seed 5] [--in 600]
[--thief-rows 100]`` (about 4 minutes, one thread).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from bench_watermark import _resnet_task
from scipy.stats import mannwhitneyu

ATTACKS = (("adam", 1e-3), ("adam", 1e-2), ("sgd", 0.01), ("sgd", 0.1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-seed", type=int, default=5)
    parser.add_argument("--in", dest="n_in", type=int, default=600, help="records the owner trains on (of 900)")
    parser.add_argument("--thief-rows", type=int, default=100)
    parser.add_argument("--null-models", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = _resnet_task()
    x, y = task.train
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.split_seed))
    trained, held_back = order[:args.n_in], order[args.n_in:]

    def evidence(model) -> str:
        model.eval()
        with torch.no_grad():
            logits = model(x)
        logp = F.log_softmax(logits, 1).gather(1, y[:, None])[:, 0]
        right = (logits.argmax(1) == y).float()
        p = mannwhitneyu(logp[trained].numpy(), logp[held_back].numpy(), alternative="greater").pvalue
        return f"p {p:7.2g} (accuracy on trained-on {right[trained].mean():.3f}, held back {right[held_back].mean():.3f})"

    owner = task.fit(task.build(0), (x[trained], y[trained]), 40, task.lr, owner=True)
    print(f"owner: test accuracy {task.acc(owner):.4f}, {evidence(owner)}", flush=True)
    rows = args.thief_rows
    thief_data, epochs = (task.held[0][:rows], task.held[1][:rows]), 10 * max(1, 400 // rows)
    for opt, lr in ATTACKS:
        thief = task.fit(copy.deepcopy(owner), thief_data, epochs, lr, optimizer=opt, seed=7)
        print(f"thief {opt} {lr:g} on {rows} inputs: test accuracy {task.acc(thief):.4f}, {evidence(thief)}",
              flush=True)
    other = (torch.cat([task.held[0], task.test[0][:200]]), torch.cat([task.held[1], task.test[1][:200]]))
    for i in range(args.null_models):
        print(f"null model {i}: {evidence(task.fit(task.build(1000 + i), other, 30, task.lr, seed=i))}", flush=True)
    print("(a mark would need p < 1e-6)")


if __name__ == "__main__":
    main()
