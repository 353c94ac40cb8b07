"""Bring-your-own-model loading: ``model protect`` + ``torchshield.load_model`` of a BERT-base-
sized Hugging Face checkpoint (~420 MB of float32 weights, random init from a config, no
download) against the plain path, ``safetensors.torch.load_file`` + ``load_state_dict``, in the
same run.

Goals (docs/benchmarks.md): an encrypted + signed load_model within 1.3x the plain load, and a
peak memory increase within 1.2x the model size. Each load runs in a fresh process (so the page
cache, not the Python heap, is what the rounds share); rounds alternate the two paths; times
are medians. The plain path builds its skeleton without random init, as from_pretrained does.

    .venv/bin/python benchmarks/bench_load.py [--rounds 3] [--layers 12]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20

CHILD = r"""
import json, os, sys, time
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
mode, directory, bundle, key_file, pub = sys.argv[1:6]
import torch, transformers
from transformers import AutoConfig
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
cfg = AutoConfig.from_pretrained(directory)
cls = getattr(transformers, cfg.architectures[0])
import torchshield
from torchshield.crypto.keys import read_key_file
from safetensors.torch import load_file
from transformers.initialization import no_init_weights
key = read_key_file(key_file)
base = rss("VmRSS:")
t0 = time.perf_counter()
if mode == "plain":
    with no_init_weights():
        model = cls(cfg)
    sd = load_file(os.path.join(directory, "model.safetensors"))
    model.load_state_dict(sd, strict=False)
    model.tie_weights()
    del sd
else:
    model = torchshield.load_model(bundle, key=key, verify_with=pub)
seconds = time.perf_counter() - t0
model.eval()
with torch.no_grad():
    out = model(input_ids=torch.tensor([[101, 2000, 3000, 102]])).logits
print(json.dumps({"seconds": seconds, "base": base, "peak": rss("VmHWM:"), "checksum": float(out.double().sum())}))
"""


def child(mode: str, directory: Path, bundle: Path, key: Path, pub: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(directory), str(bundle), str(key), str(pub)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig

    from torchshield.crypto.keys import write_key_file
    from torchshield.crypto.signing import generate_signing_key
    from torchshield.model.loading import protect_model

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        cfg = BertConfig(num_hidden_layers=args.layers, num_labels=2)  # BERT-base: 768 wide, vocab 30522
        model = AutoModelForSequenceClassification.from_config(cfg)
        model.save_pretrained(root / "bert")  # one model.safetensors, as most users have it
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        del model
        write_key_file(root / "k.key")
        generate_signing_key(root / "s")
        t0 = time.perf_counter()
        protect_model(root / "bert", root / "bert.tsb", key=root / "k.key", sign_with=root / "s.key")
        protect_s = time.perf_counter() - t0

        runs: dict[str, list[dict]] = {"plain": [], "torchshield": []}
        for r in range(args.rounds + 1):  # round 0 warms the page cache and is discarded
            for mode in (["plain", "torchshield"] if r % 2 == 0 else ["torchshield", "plain"]):
                res = child(mode, root / "bert", root / "bert.tsb", root / "k.key", root / "s.pub")
                if r:
                    runs[mode].append(res)
        a, b = runs["plain"], runs["torchshield"]
        assert a[0]["checksum"] == b[0]["checksum"], "the two loads give different outputs"
        t_plain = statistics.median(x["seconds"] for x in a)
        t_ours = statistics.median(x["seconds"] for x in b)
        mem = {k: statistics.median(x["peak"] - x["base"] for x in v) / size for k, v in runs.items()}
        print(f"model: BERT-base-sized, {args.layers} layers, {size / MiB:.0f} MiB float32 "
              f"({os.path.getsize(root / 'bert' / 'model.safetensors') / MiB:.0f} MiB file)")
        print(f"protect (scan, read, encrypt, sign): {protect_s:.2f} s")
        print(f"plain load_file + load_state_dict:   {t_plain:.3f} s   peak +{mem['plain']:.2f}x model size")
        print(f"load_model (encrypted + signed):     {t_ours:.3f} s   peak +{mem['torchshield']:.2f}x model size")
        print(f"ratio load_model / plain: {t_ours / t_plain:.2f}x  (goal <= 1.3x); "
              f"peak memory / model size: {mem['torchshield']:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
