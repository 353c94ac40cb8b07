"""Write a report's two files into one folder."""

from __future__ import annotations

from pathlib import Path

from torchshield.assess.report import Report
from torchshield.assess.report_html import write_html
from torchshield.assess.report_json import write_json

__all__ = ["write_report"]


def write_report(report: Report, out_dir: str | Path, *, html: bool = True) -> dict[str, Path]:
    """Write ``report.json`` (and ``index.html``) into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(report, out / "report.json")}
    if html:
        paths["html"] = write_html(report, out / "index.html")
    return paths
