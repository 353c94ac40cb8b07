"""``index.html``: one self-contained page (inline CSS, charts as data URIs, no script, no
network), so a reviewer can open it offline or attach it to a ticket.

Everything from the assessed files (column names, messages) is HTML-escaped by Jinja2's
autoescape: a hostile model or table must not inject markup into the reviewer's browser."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from torchshield.assess.report import Report

__all__ = ["TEMPLATE", "render_html", "write_html"]

TEMPLATE = "report.html.j2"


def render_html(report: Report) -> str:
    import jinja2

    source = resources.files("torchshield.assess").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["metric"] = _metric
    return env.from_string(source).render(report=report, doc=report.to_dict(), sections=report.sections)


def _metric(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_metric(v) for v in value) if len(value) <= 12 else f"{len(value)} values"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_metric(v)}" for k, v in list(value.items())[:12])
    return "—" if value is None else str(value)


def write_html(report: Report, path: str | Path) -> Path:
    from torchshield.atomic import atomic_write_bytes

    p = Path(path)
    atomic_write_bytes(p, render_html(report).encode("utf-8"))
    return p
