"""Which PII types each column holds, from a sample of the table (fast on big files)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from torchshield.data.pii.finding import ENTITY_LABELS
from torchshield.data.tabular.io import count_rows, detect_encoding, detect_format, iter_chunks

__all__ = ["QUASI_HEADERS", "scan_file", "scan_frame"]

# Column names that announce a quasi-identifier even when no PII type is detected in the values.
QUASI_HEADERS = ("age", "gender", "sex", "zip", "postcode", "postal", "birth", "dob", "ethnic", "occupation",
                 "年龄", "性别", "邮编", "出生", "籍贯", "民族", "职业", "婚姻")


def scan_frame(df: Any, *, min_score: float = 0.5, header_context: bool = True) -> dict[str, Any]:
    """Per column: cells scanned, and per PII type the cells holding it and the findings.

    A column where most cells are one type is an identifier column (``kind: identifier``);
    one with long values and several findings per cell is free text."""
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
        n = len(values)
        mean_len = total_len / n if n else 0.0
        dominant = cells.most_common(1)[0] if cells else None
        kind = "none"
        if dominant and mean_len >= 30 and sum(findings.values()) > 0:
            kind = "free_text"
        elif dominant and dominant[1] >= 0.5 * n:
            kind = "identifier"
        elif dominant:
            kind = "mixed"
        classes = [ENTITY_LABELS.get(t, ("direct", None)) for t in cells]
        columns[name] = {
            "cells": n, "kind": kind, "mean_length": round(mean_len, 1),
            "dominant_type": dominant[0] if dominant and kind == "identifier" else None,
            "identifier_class": "direct" if any(c[0] == "direct" for c in classes) else
            ("quasi" if classes or any(h in name.lower() for h in QUASI_HEADERS) else "none"),
            "pipl_sensitive": sorted({c[1] for c in classes if c[1]}),
            "types": {t: {"cells": cells[t], "findings": findings[t], "fraction": round(cells[t] / n, 4) if n else 0.0}
                      for t in sorted(cells)},
        }
    return columns


def scan_file(path: str | Path, *, sample_rows: int | None = 2000, encoding: str | None = None,
              fmt: str | None = None, min_score: float = 0.5) -> dict[str, Any]:
    """Scan the first ``sample_rows`` rows (None: the whole file, chunk by chunk)."""
    p = Path(path)
    f = detect_format(p, fmt)
    enc = None if f == "parquet" else (encoding or detect_encoding(p))
    merged: dict[str, Any] = {}
    rows = 0
    for chunk in iter_chunks(p, fmt=f, encoding=enc, nrows=sample_rows, chunk_rows=sample_rows or 50_000):
        rows += len(chunk)
        _merge(merged, scan_frame(chunk, min_score=min_score))
    sampled = sample_rows is not None and rows >= sample_rows
    total = count_rows(p, f) if sampled else rows
    return {"file": str(p), "format": f, "encoding": enc, "rows_scanned": rows, "sampled": sampled,
            "rows_total": total, "columns": merged}


def _merge(acc: dict[str, Any], new: dict[str, Any]) -> None:
    for col, info in new.items():
        if col not in acc:
            acc[col] = info
            continue
        a = acc[col]
        n = a["cells"] + info["cells"]
        for t, d in info["types"].items():
            at = a["types"].setdefault(t, {"cells": 0, "findings": 0, "fraction": 0.0})
            at["cells"] += d["cells"]
            at["findings"] += d["findings"]
        for at in a["types"].values():
            at["fraction"] = round(at["cells"] / n, 4) if n else 0.0
        a["cells"] = n
