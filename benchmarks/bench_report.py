"""Assessment overhead: `torchshield report` (assess + JSON + HTML with charts) against the floor
of calling each capability's own function once (scan, verify, load, membership audit, robust
evaluation, PII scan) on the same model and tables, in the same run.

    .venv/bin/python benchmarks/bench_report.py [--rows 2000] [--rounds 3]

Prints the median seconds of both and their ratio (goal: the report adds little, <= 1.5x)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "assess"))


def floor(model: Path, train: Path, test: Path) -> None:
    import torchshield
    from torchshield.assess.checks.robustness import EPS_FRACTIONS, _attacks
    from torchshield.assess.subject import load_split, rebuild_model
    from torchshield.data.tabular import scan_file
    from torchshield.model.bundle import verify
    from torchshield.privacy import audit_membership
    from torchshield.robust.evaluate import evaluate_robustness

    torchshield.scan(model)
    verify(model)
    info = torchshield.inspect(model)
    subject = rebuild_model(info.manifest, torchshield.load(model))
    xm, ym = load_split(train, subject)
    xn, yn = load_split(test, subject)
    audit_membership(subject.module, (xm, ym), (xn, yn))
    lo, hi = min(float(xn.min()), subject.bounds[0]), max(float(xn.max()), subject.bounds[1])
    evaluate_robustness(subject.module, xn, yn, attacks=list(_attacks(True).items()),
                        eps=[f * (hi - lo) for f in EPS_FRACTIONS if f], bounds=(lo, hi), num_classes=2)
    scan_file(train, sample_rows=2000)
    scan_file(test, sample_rows=2000)


def ours(model: Path, train: Path, test: Path, out: Path) -> None:
    from torchshield.assess import AssessInputs, assess, write_report

    write_report(assess(AssessInputs(model=model, data=test, train_data=train, quick=True)), out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import torch
    from assess_subjects import make_tables, train_bundle

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train, test = make_tables(folder, rows=args.rows)
        model = train_bundle(train, folder / "model.tsb", epochs=5)
        ours(model, train, test, folder / "warm")  # imports and first-call costs out of the timings
        floor(model, train, test)
        t_floor, t_ours = [], []
        for r in range(args.rounds):  # interleaved, so machine load drifts hit both alike
            t0 = time.perf_counter()
            floor(model, train, test)
            t_floor.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours(model, train, test, folder / f"report{r}")
            t_ours.append(time.perf_counter() - t0)
        html = (folder / "report0" / "index.html").stat().st_size
    f, o = statistics.median(t_floor), statistics.median(t_ours)
    print(f"rows per table: {args.rows // 2}, rounds: {args.rounds}")
    print(f"floor (each capability's function once): median {f:.2f} s")
    print(f"torchshield report (assess + report.json + index.html, {html / 1024:.0f} KiB): median {o:.2f} s")
    print(f"ratio report / floor: {o / f:.2f}x")


if __name__ == "__main__":
    main()
