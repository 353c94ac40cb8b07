"""Secure serving: what authentication, Casbin RBAC, rate limiting, extraction monitoring and the
committed hash-chained audit log cost per `predict`, all measured in one run against: the same app
with auth, RBAC and audit off but the extraction monitor on (``ref``, the issue's reference), the
same app with everything off (``off``), and a bare FastAPI endpoint running the same model
(``bare``, the floor).

Each server is its own process (uvicorn, one worker, loopback); the load generator is another
process (asyncio with a lean keep-alive HTTP/1.1 client: with httpx the generator itself was the
bottleneck). All four servers run at once and are measured in interleaved rounds: throughput
with C concurrent clients, one server after the other (each round starting with the next
server, so that none is always measured last); latency with one client that sends its
requests to the servers in turn, in blocks of 25 back-to-back requests per server
(rotating the order), so that the hiccups of this shared VM land on every variant alike while
each server still sees a steady stream (its background threads are not given idle gaps): the
added cost per request, free of queueing. Medians over the rounds. Then the soak check of the
issue: 10,000 requests from 32 clients against `torchshield serve --workers 2`: zero 5xx,
exactly one audit record per request, and `audit verify` passes.

    .venv/bin/python benchmarks/bench_serve.py                    # ~2-3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_serve.py --quick            # smaller counts
    .venv/bin/python benchmarks/bench_serve.py --hidden 2048,2048 --soak 0   # a heavier model
    .venv/bin/python benchmarks/bench_serve.py --db "$TORCHSHIELD_TEST_PG_URL" --soak 0   # secure on PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from starlette.requests import Request  # module level: FastAPI resolves the string annotation here

HERE = Path(__file__).resolve()
TS = str(Path(sys.executable).parent / "torchshield")
LATENCY_BLOCK = 25  # back-to-back requests per server before the one-client loop moves on
META = {"name": "mlp", "model": {"type": "mlp", "hidden": [64]}, "num_classes": 10,
        "input": {"shape": [64], "dtype": "float32", "min": 0, "max": 16}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- servers (child processes)
def run_server(kind: str, workdir: Path, port: int) -> None:
    import uvicorn

    from torchshield.crypto.keys import read_key_file
    from torchshield.serve.http import create_app
    from torchshield.serve.models import TrustPolicy, load_bundle_model
    from torchshield.serve.service import ServeConfig, Service

    master = read_key_file(workdir / "shield.key")
    bundle = workdir / "mlp.tsb"
    signer_pub = str(workdir / "signer.pub")
    if kind == "bare":
        import torch
        from fastapi import FastAPI

        model = load_bundle_model(bundle, master=master, trust=TrustPolicy.from_files([signer_pub]))
        app = FastAPI()

        @app.post("/v1/models/mlp/predict")
        async def predict(request: Request) -> dict:  # the floor: parse, run, answer
            x = torch.tensor(json.loads(await request.body())["inputs"], dtype=torch.float32)
            with torch.inference_mode():
                labels = model.module(x).argmax(-1).tolist()
            return {"outputs": labels, "predictions": labels}
    else:
        db_url = _secure_db(workdir) if kind == "secure" else f"sqlite:///{workdir / (kind + '.db')}"
        cfg = ServeConfig(db_url=db_url, bundles=(str(bundle),), trusted_signers=(signer_pub,),
                          rate_per_s=1e6, burst=10**6)
        service = Service.start(cfg, master=master)
        path = None  # secure: the request path the product chooses for the backend
        if kind != "secure":
            sys.path.insert(0, str(HERE.parent))
            from serve_reference import OpenPath

            path = OpenPath(service, monitored=(kind == "ref"))
        app = create_app(service, path=path)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start(cmd: list[str], url: str, log: Path | None = None) -> subprocess.Popen:
    """Start a server and wait until it answers; its stderr goes to ``log`` when given."""
    import httpx

    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            httpx.post(url, json={}, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"server {cmd} did not start")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------- load generator (child process)
class _Conn:
    """One keep-alive HTTP/1.1 connection that sends pre-encoded requests and reads the answers.

    Written here instead of using httpx because httpx's per-request work (~4 ms of CPU at 32
    concurrent requests on this machine) made the generator the bottleneck: every server then
    measured ~200 req/s, whatever it did. This client costs ~0.3 ms per request, so the servers'
    throughput decides the figures (the bare endpoint reaches ~2,500 req/s)."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port, u.path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def request(self, body: bytes, token: str = "") -> bytes:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        return (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"{auth}Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def send(self, raw: bytes) -> int:
        """Send one request and read its whole response; returns the status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return int(head[9:12])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def _load(url: str, token: str, n: int, c: int) -> dict:
    probe = _Conn(url)
    return await drive(url, [probe.request(b, token) for b in _bodies()], n, c)


async def drive(url: str, raws: list[bytes], n: int, c: int) -> dict:
    """``n`` pre-encoded requests (cycling through ``raws``) from ``c`` keep-alive clients:
    throughput, p50/p99 latency and the status counts (bench_serve_text.py reuses it)."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(n))

    async def client() -> None:
        conn = _Conn(url)
        try:
            for i in counter:
                t = time.perf_counter()
                status = await conn.send(raws[i % len(raws)])
                lat.append(time.perf_counter() - t)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(c)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"n": n, "rps": n / wall, "p50_ms": 1e3 * lat[len(lat) // 2], "p99_ms": 1e3 * lat[int(len(lat) * 0.99)],
            "statuses": statuses}


async def _latency(targets: list[tuple[str, str]], n: int, block: int = LATENCY_BLOCK) -> dict:
    """One client, ``n`` requests to each target, in blocks of ``block`` back-to-back requests per
    target, rotating the order of the targets from block to block."""
    bodies = _bodies()
    conns = {u: _Conn(u) for u, _ in targets}
    raws = {u: [conns[u].request(b, token) for b in bodies] for u, token in targets}
    lat: dict[str, list[float]] = {u: [] for u, _ in targets}
    statuses: dict[str, dict[int, int]] = {u: {} for u, _ in targets}
    for b in range(-(-n // block)):
        k = b % len(targets)
        for url, _ in targets[k:] + targets[:k]:
            for i in range(b * block, min(n, (b + 1) * block)):
                t = time.perf_counter()
                status = await conns[url].send(raws[url][i % 256])
                lat[url].append(time.perf_counter() - t)
                statuses[url][status] = statuses[url].get(status, 0) + 1
    for conn in conns.values():
        conn.close()
    out = {}
    for url, v in lat.items():
        v.sort()
        out[url] = {"p50_ms": 1e3 * v[len(v) // 2], "p99_ms": 1e3 * v[int(len(v) * 0.99)], "statuses": statuses[url]}
    return out


def latency(targets: list[tuple[str, str]], n: int) -> dict:
    args = [x for url, token in targets for x in ("--target", url, token or "-")]
    out = subprocess.run([sys.executable, str(HERE), "--latency", "--n", str(n), *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _bodies() -> list[bytes]:
    import random

    rng = random.Random(0)
    return [json.dumps({"inputs": [[rng.randint(0, 16) for _ in range(64)]]}).encode() for _ in range(256)]


def load(url: str, token: str, n: int, c: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE), "--load", url, "--token", token, "--n", str(n), "--c", str(c)],
                         check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"load generator failed: {out.stderr.strip().splitlines()[-3:]}")
    return json.loads(out.stdout)


# ---------------------------------------------------------------- main
def _secure_db(workdir: Path) -> str:
    """The secure server's database: SQLite in the work folder, or $BENCH_SERVE_DB (``--db``)."""
    return os.environ.get("BENCH_SERVE_DB") or f"sqlite:///{workdir / 'secure.db'}"


def prepare(workdir: Path, hidden: tuple[int, ...] = (64,)) -> str:
    import torch

    import torchshield
    from torchshield.crypto.keys import write_key_file
    from torchshield.crypto.signing import generate_signing_key
    from torchshield.nn.zoo import build_model
    from torchshield.serve.access.keys import KeyStore
    from torchshield.serve.db import open_database

    master = write_key_file(workdir / "shield.key")
    torch.manual_seed(0)
    meta = {**META, "model": {"type": "mlp", "hidden": list(hidden)}}
    signer, _ = generate_signing_key(workdir / "signer", overwrite=True)
    torchshield.save(build_model(meta["model"], in_shape=(64,), num_classes=10), workdir / "mlp.tsb", key=master,
                     sign_with=signer, metadata=meta)
    db = open_database(_secure_db(workdir))
    token = KeyStore(db, master).create(role="predictor", models=["mlp"]).token
    db.dispose()
    return token


def compare(workdir: Path, token: str, n: int, c: int, rounds: int,
            kinds: tuple[str, ...] = ("bare", "off", "ref", "secure")) -> dict:
    """All the servers up at once, measured in interleaved rounds so that drifting load on the
    machine hits every variant alike: throughput with ``c`` clients, latency with one client."""
    urls, procs = {}, []
    try:
        for kind in kinds:
            port = free_port()
            urls[kind] = f"http://127.0.0.1:{port}/v1/models/mlp/predict"
            procs.append(start([sys.executable, str(HERE), "--server", kind, "--dir", str(workdir), "--port", str(port)],
                               urls[kind]))
        tok = {k: token if k == "secure" else "" for k in kinds}
        for kind in kinds:
            load(urls[kind], tok[kind], 300, c)  # warm-up
        tput: dict[str, list[dict]] = {k: [] for k in kinds}
        lat: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(rounds):
            for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:  # each server first in turn
                tput[kind].append(load(urls[kind], tok[kind], n, c))
            one = latency([(urls[k], tok[k]) for k in kinds], max(500, n))
            for kind in kinds:
                lat[kind].append(one[urls[kind]])
    finally:
        for p in procs:
            stop(p)
    med = statistics.median
    return {k: {"rps": med(r["rps"] for r in tput[k]), "p50_ms": med(r["p50_ms"] for r in lat[k]),
                "p99_ms": med(r["p99_ms"] for r in lat[k]), "loaded_p99_ms": med(r["p99_ms"] for r in tput[k]),
                "statuses": tput[k][-1]["statuses"]} for k in kinds}


def soak(workdir: Path, n: int, c: int, workers: int) -> dict:
    """``n`` requests from ``c`` clients to ``workers`` uvicorn workers on a new database (SQLite
    in the work folder, or a new database on the server of ``--db``, dropped afterwards)."""
    pg = os.environ.get("BENCH_SERVE_DB")
    if not pg:
        return _soak(f"sqlite:///{workdir / 'soak.db'}", workdir, n, c, workers)
    import secrets

    import sqlalchemy as sa

    base = sa.engine.make_url(pg)
    name = f"bench_soak_{secrets.token_hex(4)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        return _soak(base.set(database=name).render_as_string(hide_password=False), workdir, n, c, workers)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def _soak(db: str, workdir: Path, n: int, c: int, workers: int) -> dict:
    key = str(workdir / "shield.key")
    boot = json.loads(subprocess.run([TS, "access", "bootstrap", "--db", db, "--key-file", key, "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models/mlp/predict"
    log = workdir / "soak-server.log"
    proc = start([TS, "serve", str(workdir / "mlp.tsb"), "--db", db, "--key-file", key, "--port", str(port),
                  "--workers", str(workers), "--rate", "1000000", "--burst", "1000000",
                  "--trust", str(workdir / "signer.pub")], url, log)
    try:
        before = _count(db, key)
        res = load(url, boot["token"], n, c)
    except RuntimeError:
        print("server log (tail):", *log.read_text(errors="replace").splitlines()[-20:], sep="\n", file=sys.stderr)
        raise
    finally:
        stop(proc)
    verify = subprocess.run([TS, "audit", "verify", "--db", db, "--key-file", key, "--json"], capture_output=True,
                            text=True, check=False)
    records = json.loads(subprocess.run([TS, "audit", "export", "--db", db, "--key-file", key, "--json"],
                                        capture_output=True, text=True, check=True).stdout)["records"]
    per_request = [r for r in records if r["action"] == "predict"]
    return {"requests": n, "clients": c, "workers": workers, "rps": res["rps"], "p99_ms": res["p99_ms"],
            "statuses": res["statuses"], "five_xx": sum(v for k, v in res["statuses"].items() if int(k) >= 500),
            "predict_records": len(per_request) - before, "verify_exit": verify.returncode,
            "alerts": sum(1 for r in records if r["action"] == "monitor.alert")}


def _count(db: str, key: str) -> int:
    out = subprocess.run([TS, "audit", "export", "--db", db, "--key-file", key, "--json"], capture_output=True,
                         text=True, check=True).stdout
    return sum(1 for r in json.loads(out)["records"] if r["action"] == "predict")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server")
    ap.add_argument("--dir")
    ap.add_argument("--port", type=int)
    ap.add_argument("--load")
    ap.add_argument("--token", default="")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--target", nargs=2, action="append", metavar=("URL", "TOKEN"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--c", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--soak", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hidden", default="64", help="hidden layer widths of the MLP, e.g. 2048,2048")
    ap.add_argument("--db", help="database URL for the secure server, e.g. a PostgreSQL one (default: SQLite)")
    ap.add_argument("--servers", default="bare,off,ref,secure",
                    help="which servers run (ref,secure: only the issue's comparison, without two more "
                         "processes competing for this machine's caches)")
    a = ap.parse_args()
    if a.server:
        return run_server(a.server, Path(a.dir), a.port)
    if a.latency:
        targets = [(url, "" if token == "-" else token) for url, token in a.target]
        print(json.dumps(asyncio.run(_latency(targets, a.n))))
        return None
    if a.load:
        print(json.dumps(asyncio.run(_load(a.load, a.token, a.n, a.c))))
        return None
    if a.db:
        os.environ["BENCH_SERVE_DB"] = a.db  # the server processes inherit it
    if a.quick:
        a.n, a.rounds, a.soak = 500, 1, 1000
    with tempfile.TemporaryDirectory() as d:
        workdir = Path(d)
        token = prepare(workdir, tuple(int(h) for h in a.hidden.split(",")))
        kinds = tuple(a.servers.split(","))
        if not {"ref", "secure"} <= set(kinds) or not set(kinds) <= {"bare", "off", "ref", "secure"}:
            ap.error("--servers: a subset of bare,off,ref,secure that holds ref and secure")
        res = compare(workdir, token, a.n, a.c, a.rounds, kinds)
        for k, v in res.items():
            print(f"{k:>7}: {v['rps']:8.1f} req/s ({a.c} clients, p99 {v['loaded_p99_ms']:7.1f} ms)  one client: "
                  f"p50 {v['p50_ms']:6.2f} ms  p99 {v['p99_ms']:6.2f} ms  {v['statuses']}")
        s = res["secure"]
        # The issue's goals compare the secure app with "the same app with auth, RBAC and audit
        # off" (ref: the extraction monitor still runs); everything off and bare FastAPI are
        # stricter references, printed beside it.
        for kind, label, goal in (("ref", "auth, RBAC, audit off (the issue's reference)", True),
                                  ("off", "all security off, monitor too", False),
                                  ("bare", "bare FastAPI (floor)", False)):
            if kind not in res:
                continue
            r = res[kind]
            print(f"secure / {label}: throughput {s['rps'] / r['rps']:.2f}x" + (" (goal >= 0.85x)" if goal else "")
                  + f"; added p99 {s['p99_ms'] - r['p99_ms']:+.2f} ms" + (" (goal <= 2 ms)" if goal else ""))
        if a.soak <= 0:
            return None
        soak_res = soak(workdir, a.soak, 32, a.workers)
        print("soak:", json.dumps(soak_res))
        ok = soak_res["five_xx"] == 0 and soak_res["predict_records"] == a.soak and soak_res["verify_exit"] == 0
        print(f"soak {'PASSED' if ok else 'FAILED'}: {a.soak} requests, {soak_res['five_xx']} 5xx, "
              f"{soak_res['predict_records']} predict records, audit verify exit {soak_res['verify_exit']}")
    return None


if __name__ == "__main__":
    main()
