"""Streaming de-identification of a table file: read in chunks, apply the policy, write
atomically, and write the policy and a report (counts only, no values) beside the output."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from torchshield.atomic import atomic_write_bytes
from torchshield.data.anonymize import Anonymizer, Policy, load_policy
from torchshield.data.tabular.io import count_rows, detect_encoding, detect_format, iter_chunks, open_writer
from torchshield.errors import InputError

__all__ = ["MaskJob", "mask_file", "mask_task", "sidecar_paths"]


def sidecar_paths(out: str | Path) -> tuple[Path, Path]:
    """Where the policy and the report of a masked output go: ``<out>.policy.yaml``, ``<out>.report.json``."""
    o = Path(out)
    return o.with_name(o.name + ".policy.yaml"), o.with_name(o.name + ".report.json")


def mask_file(src: str | Path, dst: str | Path, *, policy: Policy | str | Path | None = None, key: Any = None,
              encoding: str | None = None, in_format: str | None = None, out_format: str | None = None,
              chunk_rows: int = 50_000, on_progress: Callable[[int], None] | None = None,
              on_total: Callable[[int | None], None] | None = None, workers: int = 1,
              engine: Any = None) -> dict[str, Any]:
    """De-identify ``src`` into ``dst`` under ``policy``; return the report (also written beside ``dst``).

    ``workers`` > 1 masks chunks in that many forked processes (detection is CPU-bound Python);
    at most ``2 * workers`` chunks are in flight, so memory stays bounded. The key reaches the
    workers through the fork, never through a file or the environment.

    ``engine`` (``torchshield.data.cluster.SparkEngine``) masks the chunks on a distributed engine
    instead: the driver reads and writes (atomically, so a failed run leaves no output), the
    executors get the policy and only its subkeys (``cluster.keys``), never the master key. The
    policy, columns and key are checked before the engine starts."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InputError("the output must not overwrite the input", hint="choose another --out path")
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    anonymizer = Anonymizer(pol, key=key)  # refuses keyed operators without a key, before any output
    fin = detect_format(src, in_format)
    fout = detect_format(dst, out_format)
    enc = None if fin == "parquet" else (encoding or detect_encoding(src))
    if on_total is not None:
        on_total(count_rows(src, fin))
    t0 = time.perf_counter()
    chunks = iter_chunks(src, fmt=fin, encoding=enc, chunk_rows=chunk_rows)
    first = next(chunks, None)
    columns_in = [str(c) for c in first.columns] if first is not None else []
    if first is not None:
        pol.check_columns(columns_in)  # before any output, worker or engine
    rows = 0
    columns_out: list[str] = []
    stream = itertools.chain([first], chunks) if first is not None else iter(())
    with open_writer(dst, fout) as writer:
        for n, out in _masked_chunks(stream, anonymizer, pol, workers, engine):
            columns_out = [str(c) for c in out.columns]
            writer.write(out)
            rows += n
            if on_progress is not None:
                on_progress(n)
    elapsed = time.perf_counter() - t0
    report = _report(src, dst, pol, anonymizer, rows, columns_in, columns_out, enc, elapsed)
    if engine is not None:
        report["engine"] = engine.describe()
    policy_path, report_path = sidecar_paths(dst)
    atomic_write_bytes(policy_path, yaml.safe_dump(pol.raw, allow_unicode=True, sort_keys=False).encode("utf-8"))
    atomic_write_bytes(report_path, json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8"))
    return report


_WORKER: Anonymizer | None = None


def _init_worker(anonymizer: Anonymizer) -> None:
    global _WORKER
    _WORKER = anonymizer


def _mask_in_worker(chunk: Any) -> tuple[Any, dict[str, dict[str, int]]]:
    assert _WORKER is not None
    _WORKER.counts.clear()
    out = _WORKER.dataframe(chunk)
    return out, _WORKER.report()


@dataclass(frozen=True)
class MaskJob:
    """What a distributed engine's workers get (one broadcast): the policy and only its subkeys.
    ``token`` (random, not secret) tells one run's job from the next in a reused worker."""

    policy: Policy
    subkeys: Any  # torchshield.data.cluster.SubkeySet | None
    token: str


_ENGINE_ANONYMIZER: dict[str, Anonymizer] = {}


def mask_task(job: MaskJob, chunk: Any) -> tuple[Any, dict[str, dict[str, int]]]:
    """One chunk on an engine's worker: the masked chunk and its change counts (no values)."""
    anonymizer = _ENGINE_ANONYMIZER.get(job.token)
    if anonymizer is None:
        _ENGINE_ANONYMIZER.clear()
        anonymizer = _ENGINE_ANONYMIZER[job.token] = Anonymizer(job.policy, key=job.subkeys)
    anonymizer.counts.clear()
    out = anonymizer.dataframe(chunk)
    return out, anonymizer.report()


def _masked_chunks(chunks: Iterator[Any], anonymizer: Anonymizer, pol: Policy, workers: int,
                   engine: Any) -> Iterator[tuple[int, Any]]:
    """(rows in, masked chunk) in input order, on this process, forked workers or an engine."""
    if engine is not None:
        from torchshield.data.cluster.keys import policy_subkeys

        job = MaskJob(pol, policy_subkeys(pol, anonymizer.keys.master), uuid.uuid4().hex)
        sizes: deque[int] = deque()

        def feed() -> Iterator[Any]:
            for chunk in chunks:
                sizes.append(len(chunk))
                yield chunk

        for out, counts in engine.map_chunks(mask_task, job, feed()):
            _add_counts(anonymizer, counts)
            yield sizes.popleft(), out
        return
    if workers <= 1:
        for chunk in chunks:
            yield len(chunk), anonymizer.dataframe(chunk)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(anonymizer,)) as pool:
        pending: deque[tuple[Any, Any]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_mask_in_worker, chunk)))
            if len(pending) >= 2 * workers:
                yield _collect(pending.popleft(), anonymizer)
        while pending:
            yield _collect(pending.popleft(), anonymizer)


def _add_counts(anonymizer: Anonymizer, counts: dict[str, dict[str, int]]) -> None:
    for col, c in counts.items():
        anonymizer.counts.setdefault(col, Counter()).update(c)


def _collect(item: tuple[Any, Any], anonymizer: Anonymizer) -> tuple[int, Any]:
    chunk, fut = item
    out, counts = fut.result()
    _add_counts(anonymizer, counts)
    return len(chunk), out


def _report(src: Path, dst: Path, pol: Policy, anonymizer: Anonymizer, rows: int, cols_in: list[str],
            cols_out: list[str], enc: str | None, elapsed: float) -> dict[str, Any]:
    changes = anonymizer.report()
    per_type: Counter[str] = Counter()
    for col, counts in changes.items():
        if pol.columns.get(col) is None or pol.columns[col].scan:
            per_type.update(counts)
    techniques = sorted({(c.operator.name, c.operator.technique) for c in pol.columns.values()
                         if c.operator is not None}
                        | {(op.name, op.technique) for op in [pol.default, *pol.entities.values()] if op})
    dropped = [c for c in cols_in if c not in cols_out]
    changed = sum(sum(counts.values()) for counts in changes.values())
    if changed or dropped:
        note = ("de-identified (PIPL art. 73 去标识化), not anonymised: keyed tokens are reversible by the key holder"
                if pol.needs_key else "de-identified; review residual quasi-identifiers before calling it anonymous")
    else:  # never report a no-op as de-identification
        note = "nothing changed: no PII found and no column transformed under this policy; the output equals the input"
    return {
        "input": str(src), "output": str(dst), "encoding": enc, "rows": rows,
        "columns_in": cols_in, "columns_out": cols_out,
        "dropped_columns": dropped, "values_changed": changed,
        "changes_per_column": changes,
        "findings_per_type": dict(sorted(per_type.items())),
        "techniques": [{"operator": n, "technique": t} for n, t in techniques],
        "keyed": pol.needs_key,
        "seconds": round(elapsed, 3), "rows_per_second": round(rows / elapsed) if elapsed > 0 else None,
        "note": note,
    }
