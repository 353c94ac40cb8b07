"""Serving your own text models: a BERT-small text classifier (4 layers, hidden 256, random init
from a config, a WordPiece tokenizer built here from a word list: no download) behind
`torchshield serve`'s app (API keys, Casbin RBAC, rate limits, extraction monitor, the committed
hash-chained audit log in SQLite, server-side tokenisation of ``{"text": [...]}``) against a bare
FastAPI endpoint with the same model and tokenizer (``AutoTokenizer`` + the model, no checks),
written both ways users write it (model on the event loop: ``bare``; on a worker thread, as the
secure app runs it: ``bare-sync``); the ratio is taken against the faster of the two; ``off``
is the secure app with every check, the monitor and the audit off (where the cost goes);
``secure-nobatch`` is the secure app with dynamic batching off (``serve --no-batching``: one
forward per request, as the bare endpoints run it);
and a GPT-2-style LM (4 layers, hidden 256, tied embeddings): ``POST /v1/models/gpt2/generate``
per request against the bare ``model.generate`` call with the same settings, in the same run.

As in bench_serve.py: each server is its own process (uvicorn, one worker, loopback), the load
generator another (bench_serve's lean keep-alive HTTP/1.1 client); both servers run at once and
are measured in interleaved rounds (each round starting with the other server), medians over
rounds. Generation: one client, blocks of requests alternating between the HTTP endpoint and the
bare call (made in this process, on the model loaded from the same bundle with
``torchshield.load_model``), medians of the per-request times; both produce the same tokens
(checked).

    .venv/bin/python benchmarks/bench_serve_text.py            # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_serve_text.py --quick

Torch runs on one thread in every process (``--threads``): on a 2-core VM shared with other jobs,
a 2-thread OpenMP team spins against them and a BERT-small forward took 93-385 ms instead of 9 ms
(the same model, one process), which decided the figures more than anything measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from starlette.requests import Request  # module level: FastAPI resolves the string annotation here

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from bench_serve import _Conn, drive, free_port, start, stop  # noqa: E402

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NEW_TOKENS = 32


def words(n: int = 2000) -> list[str]:
    """``n`` distinct lowercase pseudo-words (syllable pairs and triples), the same every run."""
    syl = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    rng = random.Random(0)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(syl) for _ in range(rng.choice((2, 3)))))
    return sorted(out)


def texts(n: int = 256) -> list[str]:
    rng, vocab = random.Random(1), words()
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(12, 24))) for _ in range(n)]


# ---------------------------------------------------------------- the models, as a user has them
def build(workdir: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        BertConfig,
        GPT2Config,
        PreTrainedTokenizerFast,
    )

    vocab = words()
    bert_vocab = {w: i for i, w in enumerate([*SPECIAL, *vocab])}
    core = Tokenizer(models.WordPiece(bert_vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    bert = AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=len(bert_vocab), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=1024, max_position_embeddings=128, num_labels=2)).eval()
    bert.save_pretrained(workdir / "bert")
    tok.save_pretrained(workdir / "bert")

    gvocab = {w: i for i, w in enumerate(["<eos>", "<unk>", *vocab])}
    core = Tokenizer(models.WordLevel(gvocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    gtok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    torch.manual_seed(0)
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(
        vocab_size=len(gvocab), n_embd=256, n_layer=4, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=True)).eval()
    gpt2.save_pretrained(workdir / "gpt2")
    gtok.save_pretrained(workdir / "gpt2")


def prepare(workdir: Path) -> str:
    from torchshield.crypto.keys import write_key_file
    from torchshield.crypto.signing import generate_signing_key
    from torchshield.model.loading import protect_model
    from torchshield.serve.access.keys import KeyStore
    from torchshield.serve.db import open_database

    build(workdir)
    master = write_key_file(workdir / "shield.key")
    signer, _ = generate_signing_key(workdir / "signer", overwrite=True)
    for name in ("bert", "gpt2"):
        protect_model(workdir / name, workdir / f"{name}.tsb", key=master, sign_with=signer)
    db = open_database(f"sqlite:///{workdir / 'secure.db'}")
    token = KeyStore(db, master).create(role="predictor", models=["bert", "gpt2"]).token
    db.dispose()
    return token


# ---------------------------------------------------------------- servers (child processes)
def run_server(kind: str, workdir: Path, port: int, threads: int) -> None:
    import torch
    import uvicorn

    torch.set_num_threads(threads)

    if kind in ("bare", "bare-sync"):
        from fastapi import FastAPI
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(workdir / "bert")
        model = AutoModelForSequenceClassification.from_pretrained(workdir / "bert").eval()
        app = FastAPI()

        def answer(body: bytes) -> dict:  # the floor: parse, tokenise, run, answer
            enc = tok(json.loads(body)["text"], padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.inference_mode():
                p = torch.softmax(model(**enc).logits, -1)
            return {"outputs": p.tolist(), "predictions": p.argmax(-1).tolist()}

        if kind == "bare":  # the model runs on the event loop
            @app.post("/v1/models/bert/predict")
            async def predict(request: Request) -> dict:
                return answer(await request.body())
        else:  # the model runs on a worker thread, as the secure app does
            from starlette.concurrency import run_in_threadpool

            @app.post("/v1/models/bert/predict")
            async def predict_sync(request: Request) -> dict:
                body = await request.body()
                return await run_in_threadpool(answer, body)
    else:
        from torchshield.crypto.keys import read_key_file
        from torchshield.serve.http import create_app
        from torchshield.serve.service import ServeConfig, Service

        cfg = ServeConfig(db_url=f"sqlite:///{workdir / 'secure.db'}",
                          bundles=(str(workdir / "bert.tsb"), str(workdir / "gpt2.tsb")),
                          trusted_signers=(str(workdir / "signer.pub"),), rate_per_s=1e6, burst=10**6,
                          batching=kind != "secure-nobatch")
        service = Service.start(cfg, master=read_key_file(workdir / "shield.key"))
        path = None
        if kind == "off":  # the same app with auth, RBAC, rate limits, monitor and audit off (attribution)
            from serve_reference import OpenPath

            path = OpenPath(service, monitored=False)
        app = create_app(service, path=path)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- load generator (child process)
async def _load(url: str, token: str, n: int, c: int) -> dict:
    probe = _Conn(url)
    return await drive(url, [probe.request(json.dumps({"text": [t]}).encode(), token) for t in texts()], n, c)


def load(url: str, token: str, n: int, c: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE), "--load", url, "--token", token or "-", "--n", str(n),
                          "--c", str(c)], check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"load generator failed: {out.stderr.strip().splitlines()[-3:]}")
    return json.loads(out.stdout)


# ---------------------------------------------------------------- the two measurements
def throughput(urls: dict[str, str], token: str, n: int, c: int, rounds: int) -> dict:
    kinds = list(urls)
    tok = {k: token if k.startswith("secure") else "" for k in kinds}
    for kind in kinds:
        res = load(urls[kind], tok[kind], max(50, n // 4), c)  # warm-up
        assert set(res["statuses"]) == {"200"}, (kind, res["statuses"])
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            runs[kind].append(load(urls[kind], tok[kind], n, c))
    med = statistics.median
    return {k: {"rps": med(x["rps"] for x in v), "p50_ms": med(x["p50_ms"] for x in v),
                "rounds": [round(x["rps"], 1) for x in v], "statuses": v[-1]["statuses"]} for k, v in runs.items()}


def generation(workdir: Path, url: str, token: str, rounds: int, block: int, threads: int) -> dict:
    """Per-request time of /generate against the bare ``generate`` call with the service's settings."""
    import torch

    torch.set_num_threads(threads)  # as the server process
    from transformers import AutoTokenizer

    import torchshield
    from torchshield.crypto.keys import read_key_file
    from torchshield.serve.inputs import MAX_GENERATE_S

    model = torchshield.load_model(workdir / "gpt2.tsb", key=read_key_file(workdir / "shield.key"),
                                   verify_with=workdir / "signer.pub")
    tok = AutoTokenizer.from_pretrained(workdir / "gpt2")
    prompts = [" ".join(t.split()[:12]) for t in texts(64)]

    def bare(prompt: str) -> list[int]:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=0, do_sample=False, num_beams=1, max_time=MAX_GENERATE_S,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        new = seq[0, ids.shape[1]:].tolist()
        return new[:new.index(tok.eos_token_id)] if tok.eos_token_id in new else new

    conn = _Conn(url)
    raws = [conn.request(json.dumps({"text": p, "max_new_tokens": NEW_TOKENS}).encode(), token) for p in prompts]

    async def http_block(start_at: int) -> list[float]:
        conn.close()  # uvicorn drops a connection idle for 5 s (the bare block may take longer)
        assert await conn.send(raws[(start_at + block) % len(raws)]) == 200  # connect, untimed
        out = []
        for i in range(start_at, start_at + block):
            t = time.perf_counter()
            status = await conn.send(raws[i % len(raws)])
            out.append(time.perf_counter() - t)
            assert status == 200, status
        return out

    # same work on both sides: the served continuation is the bare call's, token for token
    import httpx

    for p in prompts[:4]:
        r = httpx.post(url, json={"text": p, "max_new_tokens": NEW_TOKENS},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60).json()
        ref = bare(p)
        assert r["tokens"] == len(ref) and r["text"] == tok.decode(ref, skip_special_tokens=True), (r, ref)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(http_block(0))  # warm-up
    for p in prompts[:block]:
        bare(p)
    served: list[float] = []
    direct: list[float] = []
    for r in range(rounds):
        order = ("http", "bare") if r % 2 == 0 else ("bare", "http")
        for side in order:
            if side == "http":
                served += loop.run_until_complete(http_block(r * block))
            else:
                for i in range(r * block, (r + 1) * block):
                    t = time.perf_counter()
                    bare(prompts[i % len(prompts)])
                    direct.append(time.perf_counter() - t)
    conn.close()
    loop.close()
    tokens = [len(bare(p)) for p in prompts[:8]]
    s, d = statistics.median(served), statistics.median(direct)
    return {"served_ms": 1e3 * s, "bare_ms": 1e3 * d, "overhead": s / d - 1, "requests": len(served),
            "new_tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server")
    ap.add_argument("--dir")
    ap.add_argument("--port", type=int)
    ap.add_argument("--load")
    ap.add_argument("--token", default="")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--c", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--gen-rounds", type=int, default=24)
    ap.add_argument("--gen-block", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per process (servers and the bare generate), the same for all")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.server:
        return run_server(a.server, Path(a.dir), a.port, a.threads)
    if a.load:
        print(json.dumps(asyncio.run(_load(a.load, "" if a.token == "-" else a.token, a.n, a.c))))
        return None
    if a.quick:
        a.n, a.rounds, a.gen_rounds, a.gen_block = 150, 2, 2, 5
    with tempfile.TemporaryDirectory() as d:
        workdir = Path(d)
        token = prepare(workdir)
        urls, procs = {}, []
        try:
            for kind in ("bare", "bare-sync", "off", "secure", "secure-nobatch"):
                port = free_port()
                urls[kind] = f"http://127.0.0.1:{port}/v1/models/bert/predict"
                procs.append(start([sys.executable, str(HERE), "--server", kind, "--dir", str(workdir), "--port",
                                    str(port), "--threads", str(a.threads)], urls[kind]))
            print(f"servers up; measuring throughput ({a.rounds} rounds of {a.n} requests)", file=sys.stderr)
            tput = throughput(urls, token, a.n, a.c, a.rounds)
            print(f"throughput done: {json.dumps(tput)}; measuring generate", file=sys.stderr)
            gen = generation(workdir, urls["secure"].replace("/bert/predict", "/gpt2/generate"), token,
                             a.gen_rounds, a.gen_block, a.threads)
        finally:
            for p in procs:
                stop(p)
    for k, v in tput.items():
        print(f"{k:>14}: {v['rps']:7.1f} req/s ({a.c} clients, p50 {v['p50_ms']:6.1f} ms) rounds {v['rounds']} "
              f"{v['statuses']}")
    floor = max(tput["bare"]["rps"], tput["bare-sync"]["rps"])  # the faster bare endpoint
    ratio = tput["secure"]["rps"] / floor
    print(f"BERT-small text predict, secure / faster bare FastAPI: {ratio:.3f}x (goal >= 0.85x: "
          f"{'met' if ratio >= 0.85 else 'MISSED'}); vs each: "
          + ", ".join(f"{k} {tput['secure']['rps'] / tput[k]['rps']:.3f}x" for k in ("bare", "bare-sync")))
    print(f"without batching (serve --no-batching): {tput['secure-nobatch']['rps'] / floor:.3f}x of the faster bare")
    print(f"GPT-2-style generate ({NEW_TOKENS} new tokens max, generated {gen['new_tokens']}): served "
          f"{gen['served_ms']:.2f} ms vs bare generate {gen['bare_ms']:.2f} ms per request (median of "
          f"{gen['requests']}): overhead {100 * gen['overhead']:+.2f}% (goal <= 5%: "
          f"{'met' if gen['overhead'] <= 0.05 else 'MISSED'})")
    print(json.dumps({"throughput": tput, "ratio": ratio, "generate": gen}))
    return None


if __name__ == "__main__":
    main()
