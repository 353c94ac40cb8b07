"""Charts for the report, drawn with matplotlib's Agg canvas and embedded as base64 PNG.

We draw on a ``Figure`` with its own ``FigureCanvasAgg`` instead of pyplot, so no global
backend state changes and nothing needs a display; the PNG is inlined as a data URI so the
report is one self-contained HTML file that opens offline."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

from torchshield.assess.findings import Chart

__all__ = ["bar_chart", "line_chart", "roc_chart"]

_SIZE = (6.0, 3.6)
_DPI = 90


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _encode(fig, chart_id: str, title: str, alt: str) -> Chart:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return Chart(chart_id, title, uri, alt)


def line_chart(
    chart_id: str,
    title: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.02),
) -> Chart:
    """One line per series (e.g. robust accuracy against epsilon, one line per attack)."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend()
    alt = "; ".join(
        f"{n}: " + ", ".join(f"{x:g}->{y:.2f}" for x, y in zip(xs, ys, strict=True))
        for n, (xs, ys) in series.items()
    )
    return _encode(fig, chart_id, title, alt)


def roc_chart(
    chart_id: str, title: str, curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]]
) -> Chart:
    """ROC curves (false vs true positive rate) of membership attacks, with the chance diagonal."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC 0.50)")
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(list(fpr), list(tpr), label=f"{name} (AUC {auc:.2f})")
    ax.set(
        title=title, xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.set_aspect("equal", adjustable="box")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    alt = "; ".join(f"{n}: AUC {auc:.3f}" for n, (_, _, auc) in curves.items())
    return _encode(fig, chart_id, title, alt)


def bar_chart(chart_id: str, title: str, values: Mapping[str, float], *, xlabel: str) -> Chart:
    """Horizontal bars (e.g. cells holding each PII type)."""
    fig = _figure()
    ax = fig.add_subplot()
    names = list(values)
    ax.barh(names, [values[n] for n in names], color="#c0392b")
    ax.set(title=title, xlabel=xlabel)
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    alt = ", ".join(f"{n}: {values[n]:g}" for n in names)
    return _encode(fig, chart_id, title, alt)
