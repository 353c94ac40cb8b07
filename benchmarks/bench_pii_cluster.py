"""`data mask` at table scale: single process vs Apache Spark with local workers (issue 20, item 4),
against a vectorised regex floor.

Over the same seeded N-row x 8-column CSV (torchshield.data.synth.patient_table, as bench_pii's
`data mask` job) and the same keyed policy:
  * floor: pandas' vectorised ``str.replace`` of the structured patterns (e-mail, CN ID, card,
    SSN, CN mobile, NANP phone; no checksums, no names, no context) over every text column:
    what regex alone costs, not a de-identification
  * driver I/O: the one reader's chunks written to Parquet, no masking (the Spark driver's own work)
  * single process: ``mask_file`` (the default ``data mask``), in a child process
  * spark local[W]: ``mask_file(engine=SparkEngine(workers=W))`` in a child process; the JVM
    start is timed apart from the masking, and the output is checked byte-identical to the
    single-process output (same key)

    .venv/bin/python benchmarks/bench_pii_cluster.py [--rows 100000] [--workers 2] [--chunk-rows 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICY = ("columns:\n  name: {operator: pseudonymize, type: PERSON}\n  id_number: encrypt\n"
          "  phone: {operator: mask, keep_first: 3, keep_last: 4}\n  address: {operator: generalize, keep: 3}\n"
          "  age: {operator: generalize, width: 5}\n  notes: scan\nentities:\n  PERSON: pseudonymize\n")

FLOOR = [
    ("EMAIL", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ("CN_RESIDENT_ID", r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dXx])"),
    ("BANK_CARD", r"(?<!\d)(?:\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{4}|\d{12,19})(?!\d)"),
    ("US_SSN", r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
    ("CN_MOBILE", r"(?<!\d)(?:(?:\+|00)?86[- ]?)?1[3-9]\d{9}(?!\d)"),
    ("PHONE_NUMBER", r"(?<![\d+])(?:(?:\+1|001)[-. ]?)?(?:\(\d{3}\)|\d{3})[-. ]?\d{3}[-. ]?\d{4}(?!\d)"),
]

CHILD = r'''
import json, os, sys, time
from torchshield.crypto.keys import read_key_file
from torchshield.data.tabular import mask_file


def tree_cpu():
    """CPU seconds (user + system) of this process and every live descendant (JVM, Python workers),
    and the part spent in Java processes."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    head, tail = fh.read().rsplit(")", 1)
            except OSError:
                continue
            f = tail.split()
            stats[int(pid)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick, head.endswith("(java"))
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in stats.items():
            if ppid == parent and pid not in mine:
                mine.add(pid)
                frontier.append(pid)
    return (sum(stats[p][1] for p in mine if p in stats),
            sum(stats[p][1] for p in mine if p in stats and stats[p][2]))


class RayEngine:
    """The same chunk contract on Ray core tasks (a measurement only: Ray is not a dependency)."""

    name = "ray"

    def __init__(self, workers):
        import ray

        self.workers = workers
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)

    def map_chunks(self, task, shared, chunks):
        from collections import deque

        import ray

        ref, remote, pending = ray.put(shared), ray.remote(task), deque()
        for chunk in chunks:
            pending.append(remote.remote(ref, chunk))
            if len(pending) >= 2 * self.workers:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())

    def describe(self):
        return {"name": "ray", "master": "local", "parallelism": self.workers}

    def close(self):
        import ray

        ray.shutdown()


src, out, pol, key, workers, chunk, engine = sys.argv[1:8]
k = read_key_file(key)
eng, start = None, 0.0
if engine == "spark":
    from torchshield.data.cluster import SparkEngine
    eng = SparkEngine(workers=int(workers))
    t = time.perf_counter(); eng.session(); start = time.perf_counter() - t
elif engine == "ray":
    t = time.perf_counter(); eng = RayEngine(int(workers)); start = time.perf_counter() - t
c0 = tree_cpu()
t = time.perf_counter()
r = mask_file(src, out, policy=pol, key=k, chunk_rows=int(chunk), engine=eng)
dt = time.perf_counter() - t
c1 = tree_cpu()
cpu, jvm = c1[0] - c0[0], c1[1] - c0[1]
if eng is not None:
    eng.close()
print(json.dumps({"rows": r["rows"], "seconds": dt, "startup_s": start, "cpu_s": cpu, "jvm_cpu_s": jvm}))
'''


def floor(src: Path) -> dict:
    import pandas as pd

    t = time.perf_counter()
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    for col in df.columns:
        s = df[col]
        for etype, pat in FLOOR:
            s = s.str.replace(pat, f"<{etype}>", regex=True)
        df[col] = s
    df.to_parquet(src.with_name("floor.parquet"))
    dt = time.perf_counter() - t
    return {"rows": len(df), "seconds": dt}


def driver_io(src: Path, chunk: int) -> dict:
    """What the Spark path's driver does besides waiting: read the chunks and write Parquet."""
    from torchshield.data.tabular import iter_chunks, open_writer

    t = time.perf_counter()
    rows = 0
    with open_writer(src.with_name("io.parquet"), "parquet") as w:
        for c in iter_chunks(src, chunk_rows=chunk):
            w.write(c)
            rows += len(c)
    return {"rows": rows, "seconds": time.perf_counter() - t}


def child(src: Path, out: Path, pol: Path, key: Path, workers: int, chunk: int, engine: str) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), str(pol), str(key), str(workers),
                           str(chunk), engine], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{engine} run failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--ray", action="store_true", help="also run the chunk contract on Ray core tasks (if installed)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    from torchshield.crypto.keys import write_key_file
    from torchshield.data.synth import patient_table

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {args.rows:,} rows x 8 columns, chunks of {args.chunk_rows:,}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = d / "patients.csv"
        df = patient_table(args.rows, seed=3, unique=min(args.rows, 20_000)).drop(columns=["visit_date", "diagnosis"])
        df.to_csv(src, index=False)
        del df
        key = d / "k.key"
        write_key_file(key)
        pol = d / "pol.yaml"
        pol.write_text(POLICY, encoding="utf-8")
        results["floor"] = floor(src)
        results["driver_io"] = driver_io(src, args.chunk_rows)
        results["single"] = child(src, d / "single.parquet", pol, key, 1, args.chunk_rows, "local")
        results["spark"] = child(src, d / "spark.parquet", pol, key, args.workers, args.chunk_rows, "spark")
        identical = (d / "single.parquet").read_bytes() == (d / "spark.parquet").read_bytes()
        if args.ray:
            results["ray"] = child(src, d / "ray.parquet", pol, key, args.workers, args.chunk_rows, "ray")
            results["ray_identical"] = (d / "single.parquet").read_bytes() == (d / "ray.parquet").read_bytes()
    print(f"{'':<46} {'wall':>9} {'wall rows/s':>16} {'ratio':>6}   CPU s (all processes), rows per CPU s")
    base = results["single"]["rows"] / results["single"]["seconds"]
    for name, label in (("driver_io", "driver read + write only (no masking)"),
                        ("floor", "vectorised regex floor (pandas str.replace)"),
                        ("single", "data mask, single process"),
                        ("spark", f"data mask, Spark local[{args.workers}]"),
                        ("ray", f"data mask, Ray core tasks, {args.workers} CPUs")):
        if name not in results:
            continue
        r = results[name]
        rate = r["rows"] / r["seconds"]
        extra = ""
        if name == "ray":
            extra = (f"; ray.init {r['startup_s']:.1f} s apart; output byte-identical to single process: "
                     f"{results['ray_identical']}")
        if name == "spark":
            end_to_end = r["rows"] / (r["seconds"] + r["startup_s"])
            extra = (f"; JVM start {r['startup_s']:.1f} s apart, {end_to_end:,.0f} rows/s with it; "
                     f"output byte-identical to single process: {identical}")
        cpu = r.get("cpu_s")
        cpu_txt = f"   {cpu:>7.1f} s, {r['rows'] / cpu:>7,.0f}" if cpu else ""
        print(f"{label:<46} {r['seconds']:>7.1f} s {rate:>9,.0f} rows/s  {rate / base:>5.2f}x{cpu_txt}{extra}")
    if results["spark"].get("cpu_s") and results["single"].get("cpu_s"):
        over = results["spark"]["cpu_s"] / results["single"]["cpu_s"]
        print(f"Spark path CPU / single-process CPU: {over:.2f}x ({results['spark']['jvm_cpu_s']:.1f} s of it in "
              f"the JVM); with {args.workers} otherwise idle cores the masking "
              f"would take about {results['spark']['cpu_s'] / args.workers:.1f} s wall "
              f"({results['spark']['rows'] * args.workers / results['spark']['cpu_s']:,.0f} rows/s; a projection "
              f"from CPU time, not a wall-clock measurement)")
    results["identical"] = identical
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
