"""PII left in the data a model learned from (and the data it is tested on).

Counts only: the report names columns and PII types and how many cells hold them, never a
value, because the report travels further than the data does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchshield.assess.checks.capability import require
from torchshield.assess.context import AssessContext
from torchshield.assess.findings import FAIL, PASS, WARN, Section

__all__ = ["check_pii_residue", "pii_residue"]

SAMPLE_ROWS = 2000


def _measurements(df: Any) -> list[str]:
    """Float columns with fractional values: measurements, not identifiers. Their decimal digits
    can pass checksums (Luhn) by chance, so scanning them only adds false bank-card findings;
    integral floats are still scanned (a phone number stored as 1.88e10 is still PII)."""
    import numpy as np
    import pandas as pd

    out = []
    for col in df.columns:
        values = df[col]
        if values.dtype.kind not in "fO":
            continue
        if values.dtype.kind == "O":  # CSV cells arrive as text: a column of decimals is still numeric
            values = pd.to_numeric(values, errors="coerce")
            if values.isna().any():
                continue
        v = values.to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size and not np.all(v == np.round(v)):
            out.append(col)
    return out


def pii_residue(path: Path, *, sample_rows: int = SAMPLE_ROWS) -> dict[str, Any]:
    """Per table: rows scanned, identifier columns, and cells per PII type (no values)."""
    tabular = require("torchshield.data.tabular", "PII detection in tables")
    frame = next(iter(tabular.iter_chunks(path, nrows=sample_rows, chunk_rows=sample_rows)), None)
    if frame is None:
        return {
            "file": path.name,
            "rows_scanned": 0,
            "identifier_columns": {},
            "columns_with_pii": {},
            "cells_per_type": {},
            "measurement_columns": [],
        }
    skipped = _measurements(frame)
    scan = {"rows_scanned": len(frame), "columns": tabular.scan_frame(frame.drop(columns=skipped))}
    per_type: dict[str, int] = {}
    identifiers: dict[str, str] = {}
    columns: dict[str, dict[str, int]] = {}
    for col, info in scan["columns"].items():
        types = {t: int(d["cells"]) for t, d in info["types"].items() if d["cells"]}
        if not types:
            continue
        columns[col] = types
        if info["kind"] == "identifier":
            identifiers[col] = info.get("dominant_type") or max(types, key=types.__getitem__)
        for t, n in types.items():
            per_type[t] = per_type.get(t, 0) + n
    return {
        "file": path.name,
        "rows_scanned": scan["rows_scanned"],
        "identifier_columns": identifiers,
        "columns_with_pii": columns,
        "cells_per_type": dict(sorted(per_type.items())),
        "measurement_columns": [str(c) for c in skipped],
    }


def check_pii_residue(ctx: AssessContext) -> Section:
    s = Section("pii-residue", "PII residue in the data")
    tables = [
        (role, p)
        for role, p in (("training data", ctx.inputs.train_data), ("test data", ctx.inputs.data))
        if p is not None
    ]
    if not tables:
        s.skip("no data table was given", "pass --train-data train.parquet (the data the model learned from)")
        return s
    total: dict[str, int] = {}
    for role, path in tables:
        res = pii_residue(path)
        s.metrics[role.replace(" ", "_")] = res
        for t, n in res["cells_per_type"].items():
            total[t] = total.get(t, 0) + n
        cells = sum(res["cells_per_type"].values())
        check = f"{role.split()[0]}-pii"
        if res["identifier_columns"]:
            cols = ", ".join(f"{c} ({t})" for c, t in res["identifier_columns"].items())
            s.add(
                check,
                FAIL,
                f"{role} ({path.name}) has identifier columns: {cols}",
                "de-identify it before training: torchshield data mask IN --out OUT (then data kanon)",
            )
        elif cells:
            s.add(
                check,
                WARN,
                f"{role} ({path.name}) has {cells} cells with possible PII in "
                f"{len(res['columns_with_pii'])} columns ({', '.join(res['cells_per_type'])})",
                "review those columns; mask free text with torchshield data mask",
            )
        else:
            s.add(check, PASS, f"no PII found in {res['rows_scanned']} rows of {role} ({path.name})")
    if total:
        from torchshield.assess.charts import bar_chart

        s.charts.append(bar_chart("pii-types", "Cells holding PII, by type", total, xlabel="cells"))
    return s
