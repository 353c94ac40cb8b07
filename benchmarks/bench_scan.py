"""Scanner throughput and findings next to ModelScan and fickling, on the same files, in the same run.

    .venv/bin/python benchmarks/bench_scan.py [--scale 1.0] [--keep DIR] [--baseline-src OLD/src]

``--baseline-src`` loads a second copy of the scanner (e.g. ``git archive HEAD~5 src | tar -x -C /tmp/old``)
in the same process and times it against this one on the benign files, alternating run by run,
so that a shared machine's load falls on both alike: the figure is the median paired CPU ratio.

Corpus: large benign checkpoints (torch zip, torch legacy, npz, a pickle of NumPy arrays,
safetensors), 40 small state_dicts, and the malicious catalogue of
tests/unit/model/scan_corpus.py (one file per technique of model-threats.md).

Anchors run from a separate virtual environment (never this one, they must not pull another
torch): ``python3 -m venv /tmp/anchors-scan && /tmp/anchors-scan/bin/pip install modelscan fickling``.
Each tool is timed in-process over the whole file list (interpreter start-up excluded for all
three), so MB/s compares scanning work only. Missing anchors are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "model"))

import scan_corpus as corpus  # noqa: E402 - after the sys.path entry above

ANCHOR_PY = Path("/tmp/anchors-scan/bin/python")
ANCHOR_RUNNER = r"""
import json, sys, time, warnings, logging
warnings.simplefilter("ignore"); logging.disable(logging.CRITICAL)
tool, listing = sys.argv[1], sys.argv[2]
files = json.load(open(listing))
if tool == "modelscan":
    from modelscan.modelscan import ModelScan
    def judge(p):
        r = ModelScan().scan(p)
        if r.get("issues"):
            return "unsafe"
        if r.get("errors"):
            return "error"
        if not r.get("summary", {}).get("scanned", {}).get("total_scanned"):
            return "skipped"
        return "safe"
else:
    import fickling, zipfile
    def judge(p):
        # fickling's public entry points: scan_zip_archive for zips (torch checkpoints), scan_file otherwise
        rs = list(fickling.scan_zip_archive(p, graceful=True).values()) if zipfile.is_zipfile(p) else \
            [fickling.scan_file(p, graceful=True)]
        if not rs:
            return "skipped"
        if any(not r.is_safe and not r.errors for r in rs):
            return "unsafe"
        return "error" if any(r.errors for r in rs) else "safe"
verdicts = {}
t0 = time.perf_counter()
for p in files:
    try:
        verdicts[p] = judge(p)
    except BaseException as exc:  # a crash on hostile input is a result too
        verdicts[p] = "error"
print(json.dumps({"elapsed": time.perf_counter() - t0, "verdicts": verdicts}))
"""


def build_corpus(folder: Path, scale: float) -> tuple[list[Path], list[Path]]:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    def mb(n):
        return max(1, int(n * scale))
    big = {f"layer{i}.weight": torch.randn(mb(128) * 1024 * 256 // 120) for i in range(120)}
    benign = []
    for name, kwargs in (("big_zip.pt", {}), ("big_legacy.pt", {"_use_new_zipfile_serialization": False})):
        path = folder / name
        torch.save(big, path, **kwargs)
        benign.append(path)
    arrays = {f"a{i}": np.random.default_rng(i).standard_normal(mb(32) * 1024 * 128 // 8) for i in range(8)}
    np.savez(folder / "big.npz", **arrays)
    with open(folder / "big_arrays.pkl", "wb") as fh:
        import pickle

        pickle.dump(arrays, fh, protocol=4)
    save_file({k: v for k, v in list(big.items())[:60]}, folder / "big.safetensors")
    benign += [folder / "big.npz", folder / "big_arrays.pkl", folder / "big.safetensors"]
    net = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(6)])
    for i in range(40):
        path = folder / f"small_{i}.pt"
        torch.save(net.state_dict(), path)
        benign.append(path)
    malicious = [path for _sample, path in corpus.write_all(corpus.malicious(), folder / "malicious")]
    return benign, malicious


def ours(files: list[Path]) -> tuple[float, dict[str, str]]:
    from torchshield.model.scan import scan

    t0 = time.perf_counter()
    verdicts = {str(p): scan(p).files[0].status for p in files}
    return time.perf_counter() - t0, verdicts


def benign_only(files: list[Path], repeat: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds over the benign files: CPU time is the steadier figure on
    a shared machine (other jobs stretch wall time, not our own CPU time)."""
    from torchshield.model.scan import scan

    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for p in files:
            assert scan(p).files[0].status == "safe", p
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _load_scan(src: Path) -> Any:
    """Import torchshield.model.scan from ``src`` under its own module objects."""
    import importlib

    for name in [n for n in sys.modules if n == "torchshield" or n.startswith("torchshield.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("torchshield.model.scan").scan
    finally:
        sys.path.remove(str(src))


def paired(files: list[Path], baseline_src: Path, rounds: int) -> tuple[float, float, float]:
    """Median CPU seconds of this scanner and of the baseline over ``files``, alternating which
    runs first, and the median of the per-round ratios (this / baseline)."""
    current = _load_scan(ROOT / "src")
    baseline = _load_scan(baseline_src)
    assert current.__code__.co_filename != baseline.__code__.co_filename

    def cpu(fn: Any) -> float:
        c0 = time.process_time()
        for p in files:
            fn(p)
        return time.process_time() - c0

    cpu(current), cpu(baseline)
    ours_t, base_t = [], []
    for i in range(rounds):
        for fn, out in ((current, ours_t), (baseline, base_t))[:: 1 if i % 2 else -1]:
            out.append(cpu(fn))
    ratio = statistics.median(o / b for o, b in zip(ours_t, base_t, strict=True))
    return statistics.median(ours_t), statistics.median(base_t), ratio


def anchor(tool: str, files: list[Path], folder: Path, timeout: float) -> tuple[float, dict[str, str]] | None:
    if not ANCHOR_PY.exists():
        print(f"note: {tool} skipped: {ANCHOR_PY} not found (see the module docstring to install anchors)")
        return None
    listing = folder / f"{tool}-files.json"
    listing.write_text(json.dumps([str(p) for p in files]))
    try:
        proc = subprocess.run(
            [str(ANCHOR_PY), "-c", ANCHOR_RUNNER, tool, str(listing)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"note: {tool} did not finish within {timeout:.0f} s")
        return None
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"note: {tool} failed: {proc.stderr.strip()[-300:]}")
        return None
    return doc["elapsed"], doc["verdicts"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="size multiplier for the large files")
    parser.add_argument("--keep", type=Path, help="build the corpus here and keep it")
    parser.add_argument("--anchor-timeout", type=float, default=150)
    parser.add_argument(
        "--baseline-src", type=Path, help="another scanner's src/ to time against (see above)"
    )
    parser.add_argument(
        "--repeat", type=int, default=9, help="runs of torchshield over the benign files alone (median kept)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        benign, malicious = build_corpus(folder, args.scale)
        files = benign + malicious
        total_mb = sum(p.stat().st_size for p in files) / 1e6
        print(
            f"corpus: {len(benign)} benign ({sum(p.stat().st_size for p in benign) / 1e6:.0f} MB), "
            f"{len(malicious)} malicious; {total_mb:.0f} MB in {len(files)} files"
        )
        ours(files[:3])  # warm page cache and imports
        runs = [ours(files) for _ in range(3)]
        t_ours = statistics.median(r[0] for r in runs)
        results = {"torchshield": (t_ours, runs[0][1])}
        benign_mb = sum(p.stat().st_size for p in benign) / 1e6
        t_benign, cpu_benign = benign_only(benign, args.repeat)
        print(
            f"torchshield on the benign files alone: {t_benign:.3f} s, {benign_mb / t_benign:.0f} MB/s, "
            f"{len(benign) / t_benign:.0f} files/s; CPU {cpu_benign:.3f} s, {benign_mb / cpu_benign:.0f} MB/s "
            f"(medians of {args.repeat})"
        )
        if args.baseline_src:
            now, then, ratio = paired(benign, args.baseline_src, max(args.repeat, 21))
            print(
                f"benign files, paired CPU: this {now * 1e3:.1f} ms, baseline {then * 1e3:.1f} ms, "
                f"median ratio {ratio:.3f} (throughput {100 * (1 / ratio - 1):+.1f}%)"
            )
        for tool in ("modelscan", "fickling"):
            got = anchor(tool, files, folder, args.anchor_timeout)
            if got is not None:
                results[tool] = got
        report(results, benign, malicious, total_mb)


def report(
    results: dict[str, tuple[float, dict[str, str]]],
    benign: list[Path],
    malicious: list[Path],
    total_mb: float,
) -> None:
    n = len(benign) + len(malicious)
    print(
        f"\n{'tool':<12} {'time s':>8} {'MB/s':>9} {'files/s':>8} {'caught':>8} {'unscanned':>9} {'missed':>7} "
        f"{'false+':>7}"
    )
    base = results["torchshield"][0]
    for tool, (elapsed, verdicts) in results.items():
        unscanned = sum(verdicts.get(str(p)) in ("error", "skipped", "unreadable") for p in malicious)
        caught = sum(verdicts.get(str(p)) == "unsafe" for p in malicious)
        false_pos = sum(verdicts.get(str(p)) != "safe" for p in benign)
        print(
            f"{tool:<12} {elapsed:8.2f} {total_mb / elapsed:9.1f} {n / elapsed:8.1f} {caught:>4}/{len(malicious):<3} "
            f"{unscanned:>9} {len(malicious) - caught - unscanned:>7} {false_pos:>4}/{len(benign)}"
        )
    for tool, (elapsed, _v) in results.items():
        if tool != "torchshield":
            print(f"throughput ratio torchshield/{tool}: {elapsed / base:.1f}x")
    others = [t for t in results if t != "torchshield"]
    if others:
        print("\nmalicious files torchshield flags and an anchor does not (anchor verdict):")
        for p in malicious:
            ours_v = results["torchshield"][1][str(p)]
            misses = {t: results[t][1].get(str(p)) for t in others if results[t][1].get(str(p)) != "unsafe"}
            if ours_v == "unsafe" and misses:
                print(f"  {p.name:<48} " + ", ".join(f"{t}={v}" for t, v in misses.items()))
        print("malicious files an anchor flags and torchshield does not:")
        for p in malicious:
            if results["torchshield"][1][str(p)] != "unsafe":
                print(
                    f"  {p.name}: torchshield={results['torchshield'][1][str(p)]}, "
                    + ", ".join(f"{t}={results[t][1].get(str(p))}" for t in others)
                )


if __name__ == "__main__":
    main()
