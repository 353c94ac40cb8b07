"""Which PII types each column holds, from a sample of the table (fast on big files).

Scanning is split in two so that it can run on many workers: ``scan_partial`` counts what one
chunk of rows holds (sums only), ``merge_partials`` adds counts from any number of chunks in any
grouping, and ``finish_scan`` turns the totals into the per-column report. So the report of a
table does not depend on how it was cut into chunks or partitions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torchshield.data.pii.finding import ENTITY_LABELS
from torchshield.data.tabular.io import count_rows, detect_encoding, detect_format, iter_chunks

__all__ = ["QUASI_HEADERS", "finish_scan", "merge_partials", "scan_file", "scan_frame", "scan_partial"]

# Column names that announce a quasi-identifier even when no PII type is detected in the values.
QUASI_HEADERS = ("age", "gender", "sex", "zip", "postcode", "postal", "birth", "dob", "ethnic", "occupation",
                 "年龄", "性别", "邮编", "出生", "籍贯", "民族", "职业", "婚姻")


def scan_partial(df: Any, *, min_score: float = 0.5, header_context: bool = True) -> dict[str, Any]:
    """Counts for one chunk, per column: cells scanned, their total length, and per PII type the
    cells holding it and the findings. Additive: see ``merge_partials``."""
    from torchshield.data.pii import find_pii

    columns: dict[str, Any] = {}
    for col in df.columns:
        name = str(col)
        values = [v for v in df[col].tolist() if isinstance(v, str) and v.strip()]
        if not values and len(df[col]):
            values = [str(v) for v in df[col].tolist() if v is not None and v == v]
        cells: Counter[str] = Counter()
        findings: Counter[str] = Counter()
        total_len = 0
        for v in values:
            total_len += len(v)
            fs = find_pii(v, min_score=min_score, context=name if header_context else "")
            findings.update(f.type for f in fs)
            cells.update({f.type for f in fs})
        columns[name] = {"cells": len(values), "length": total_len,
                         "types": {t: {"cells": cells[t], "findings": findings[t]} for t in sorted(cells)}}
    return columns


def merge_partials(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several ``scan_partial`` results (columns in order of first appearance)."""
    acc: dict[str, Any] = {}
    for part in parts:
        for col, info in part.items():
            a = acc.setdefault(col, {"cells": 0, "length": 0, "types": {}})
            a["cells"] += info["cells"]
            a["length"] += info["length"]
            for t, d in info["types"].items():
                at = a["types"].setdefault(t, {"cells": 0, "findings": 0})
                at["cells"] += d["cells"]
                at["findings"] += d["findings"]
    return acc


def finish_scan(totals: dict[str, Any]) -> dict[str, Any]:
    """Per column, from summed counts: its kind, class and PII types.

    A column where most cells are one type is an identifier column (``kind: identifier``);
    one with long values and several findings per cell is free text."""
    columns: dict[str, Any] = {}
    for name, info in totals.items():
        n = info["cells"]
        types = info["types"]
        mean_len = info["length"] / n if n else 0.0
        dominant = max(sorted(types), key=lambda t: types[t]["cells"]) if types else None
        n_findings = sum(d["findings"] for d in types.values())
        kind = "none"
        if dominant and mean_len >= 30 and n_findings > 0:
            kind = "free_text"
        elif dominant and types[dominant]["cells"] >= 0.5 * n:
            kind = "identifier"
        elif dominant:
            kind = "mixed"
        classes = [ENTITY_LABELS.get(t, ("direct", None)) for t in types]
        columns[name] = {
            "cells": n, "kind": kind, "mean_length": round(mean_len, 1),
            "dominant_type": dominant if kind == "identifier" else None,
            "identifier_class": "direct" if any(c[0] == "direct" for c in classes) else
            ("quasi" if classes or any(h in name.lower() for h in QUASI_HEADERS) else "none"),
            "pipl_sensitive": sorted({c[1] for c in classes if c[1]}),
            "types": {t: {"cells": d["cells"], "findings": d["findings"],
                          "fraction": round(d["cells"] / n, 4) if n else 0.0} for t, d in sorted(types.items())},
        }
    return columns


def scan_frame(df: Any, *, min_score: float = 0.5, header_context: bool = True) -> dict[str, Any]:
    """Per column: cells scanned, kind, class, and per PII type the cells holding it and the findings."""
    return finish_scan(scan_partial(df, min_score=min_score, header_context=header_context))


def scan_task(min_score: float, chunk: Any) -> dict[str, Any]:
    """What a distributed engine runs per chunk (``data scan --engine spark``): counts only, no values."""
    return scan_partial(chunk, min_score=min_score)


def scan_file(path: str | Path, *, sample_rows: int | None = 2000, encoding: str | None = None,
              fmt: str | None = None, min_score: float = 0.5, engine: Any = None,
              chunk_rows: int = 50_000) -> dict[str, Any]:
    """Scan the first ``sample_rows`` rows (None: the whole file, chunk by chunk).

    ``engine`` (a ``torchshield.data.cluster`` engine, e.g. ``SparkEngine``) scans the chunks on
    its workers; the driver reads the file and sums the workers' counts, so the report equals the
    single-process one."""
    p = Path(path)
    f = detect_format(p, fmt)
    enc = None if f == "parquet" else (encoding or detect_encoding(p))
    size = min(sample_rows, chunk_rows) if sample_rows is not None else chunk_rows
    chunks = iter_chunks(p, fmt=f, encoding=enc, nrows=sample_rows, chunk_rows=size)
    rows = 0

    def counted() -> Any:
        nonlocal rows
        for chunk in chunks:
            rows += len(chunk)
            yield chunk

    if engine is None:
        parts: Iterable[dict[str, Any]] = (scan_partial(c, min_score=min_score) for c in counted())
    else:
        parts = engine.map_chunks(scan_task, min_score, counted())
    merged = finish_scan(merge_partials(parts))
    sampled = sample_rows is not None and rows >= sample_rows
    total = count_rows(p, f) if sampled else rows
    out = {"file": str(p), "format": f, "encoding": enc, "rows_scanned": rows, "sampled": sampled,
           "rows_total": total, "columns": merged}
    if engine is not None:
        out["engine"] = engine.describe()
    return out
