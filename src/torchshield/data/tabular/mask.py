"""Streaming de-identification of a table file: read in chunks, apply the policy, write
atomically, and write the policy and a report (counts only, no values) beside the output."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from torchshield.atomic import atomic_write_bytes
from torchshield.data.anonymize import Anonymizer, Policy, load_policy
from torchshield.data.tabular.io import count_rows, detect_encoding, detect_format, iter_chunks, open_writer
from torchshield.errors import InputError

__all__ = ["mask_file", "sidecar_paths"]


def sidecar_paths(out: str | Path) -> tuple[Path, Path]:
    """Where the policy and the report of a masked output go: ``<out>.policy.yaml``, ``<out>.report.json``."""
    o = Path(out)
    return o.with_name(o.name + ".policy.yaml"), o.with_name(o.name + ".report.json")


def mask_file(src: str | Path, dst: str | Path, *, policy: Policy | str | Path | None = None, key: Any = None,
              encoding: str | None = None, in_format: str | None = None, out_format: str | None = None,
              chunk_rows: int = 50_000, on_progress: Callable[[int], None] | None = None,
              on_total: Callable[[int | None], None] | None = None, workers: int = 1) -> dict[str, Any]:
    """De-identify ``src`` into ``dst`` under ``policy``; return the report (also written beside ``dst``).

    ``workers`` > 1 masks chunks in that many forked processes (detection is CPU-bound Python);
    at most ``2 * workers`` chunks are in flight, so memory stays bounded. The key reaches the
    workers through the fork, never through a file or the environment."""
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
    rows = 0
    columns_in: list[str] = []
    columns_out: list[str] = []
    with open_writer(dst, fout) as writer:
        for i, (chunk, out) in enumerate(_masked_chunks(iter_chunks(src, fmt=fin, encoding=enc, chunk_rows=chunk_rows),
                                                        anonymizer, pol, workers)):
            if i == 0:
                columns_in = [str(c) for c in chunk.columns]
            columns_out = [str(c) for c in out.columns]
            writer.write(out)
            rows += len(chunk)
            if on_progress is not None:
                on_progress(len(chunk))
    elapsed = time.perf_counter() - t0
    report = _report(src, dst, pol, anonymizer, rows, columns_in, columns_out, enc, elapsed)
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


def _masked_chunks(chunks: Iterator[Any], anonymizer: Anonymizer, pol: Policy,
                   workers: int) -> Iterator[tuple[Any, Any]]:
    first = True
    if workers <= 1:
        for chunk in chunks:
            if first:
                pol.check_columns([str(c) for c in chunk.columns])
                first = False
            yield chunk, anonymizer.dataframe(chunk)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(anonymizer,)) as pool:
        pending: deque[tuple[Any, Any]] = deque()
        for chunk in chunks:
            if first:
                pol.check_columns([str(c) for c in chunk.columns])
                first = False
            pending.append((chunk, pool.submit(_mask_in_worker, chunk)))
            if len(pending) >= 2 * workers:
                yield _collect(pending.popleft(), anonymizer)
        while pending:
            yield _collect(pending.popleft(), anonymizer)


def _collect(item: tuple[Any, Any], anonymizer: Anonymizer) -> tuple[Any, Any]:
    chunk, fut = item
    out, counts = fut.result()
    for col, c in counts.items():
        anonymizer.counts.setdefault(col, Counter()).update(c)
    return chunk, out


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
    return {
        "input": str(src), "output": str(dst), "encoding": enc, "rows": rows,
        "columns_in": cols_in, "columns_out": cols_out,
        "dropped_columns": [c for c in cols_in if c not in cols_out],
        "changes_per_column": changes,
        "findings_per_type": dict(sorted(per_type.items())),
        "techniques": [{"operator": n, "technique": t} for n, t in techniques],
        "keyed": pol.needs_key,
        "seconds": round(elapsed, 3), "rows_per_second": round(rows / elapsed) if elapsed > 0 else None,
        "note": "de-identified (PIPL art. 73 去标识化), not anonymised: keyed tokens are reversible by the key holder"
                if pol.needs_key else "de-identified; review residual quasi-identifiers before calling it anonymous",
    }
