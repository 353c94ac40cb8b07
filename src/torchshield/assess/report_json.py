"""``report.json``: the machine-readable report (same content as the HTML, charts by title)."""

from __future__ import annotations

import json
from pathlib import Path

from torchshield.assess.report import Report

__all__ = ["report_json", "write_json"]


def report_json(report: Report) -> str:
    from torchshield.jsonable import to_jsonable

    return json.dumps(to_jsonable(report.to_dict()), indent=2, ensure_ascii=False, allow_nan=False)


def write_json(report: Report, path: str | Path) -> Path:
    from torchshield.atomic import atomic_write_bytes

    p = Path(path)
    atomic_write_bytes(p, (report_json(report) + "\n").encode("utf-8"))
    return p
