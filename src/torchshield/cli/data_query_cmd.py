"""`torchshield data query`: a DP aggregate over a CSV/Parquet file, charged to the budget ledger.

The data-deid engineer's ``data_cmd.py`` calls :func:`register_into` to add it to the ``data`` group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit

__all__ = ["query", "register_into"]

KINDS = ("count", "histogram", "mean", "quantile", "sum")


def _bounds(values: list[str]) -> dict[str, tuple[float, float]]:
    from torchshield.errors import InputError

    out = {}
    for v in values:
        col, _, rng = v.partition("=")
        lo, _, hi = rng.partition(":")
        try:
            out[col] = (float(lo), float(hi))
        except ValueError:
            raise InputError(f"--bounds {v!r}: expected COLUMN=LOW:HIGH, e.g. age=0:120") from None
    return out


def query(data: Path = typer.Argument(..., help="CSV or Parquet file."),
          kind: str = typer.Argument(..., help=f"One of {', '.join(KINDS)}."),
          column: str = typer.Argument(None, help="Column (not for count)."),
          epsilon: float = typer.Option(..., "--epsilon", help="Privacy cost of this query."),
          delta: float = typer.Option(0.0, "--delta", help="Delta cost (Gaussian mechanism only)."),
          mechanism: str = typer.Option("laplace", "--mechanism", help="laplace or gaussian."),
          bounds: list[str] = typer.Option([], "--bounds", help="Public bounds COLUMN=LOW:HIGH (repeatable)."),
          q: float = typer.Option(0.5, "--q", help="Quantile to estimate (quantile queries)."),
          bins: int = typer.Option(None, "--bins", help="Histogram: equal-width bins over the bounds."),
          categories: str = typer.Option(None, "--categories", help="Histogram: comma-separated public keys."),
          ledger: str = typer.Option(None, "--ledger", help="Ledger URL (default $TORCHSHIELD_LEDGER or "
                                                            "~/.torchshield/privacy-ledger.db)."),
          budget_epsilon: float = typer.Option(None, "--budget-epsilon", help="Lifetime budget (first query)."),
          budget_delta: float = typer.Option(0.0, "--budget-delta", help="Lifetime delta budget (first query)."),
          actor: str = typer.Option(None, "--actor", help="Who asks (default: the login name)."),
          key_file: Path = typer.Option(None, "--key-file", "-k",
                                        help="Master key: the ledger's history is chained under it "
                                             "(default $TORCHSHIELD_KEY_FILE / $TORCHSHIELD_KEY)."),
          as_json: bool = JSON_OPTION) -> None:
    """Answer a DP count/sum/mean/histogram/quantile; refused with exit 3 when the budget would be overspent."""
    from torchshield.errors import InputError
    from torchshield.privacy.queries import Dataset

    if kind not in KINDS:
        raise InputError(f"query kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "count" and not column:
        raise InputError(f"a {kind} query needs a COLUMN")
    budget = (budget_epsilon, budget_delta) if budget_epsilon is not None else None
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.privacy.ledger import Ledger

    book = Ledger(ledger, key=resolve_master_key(key_file=key_file))  # the key, resolved once here
    ds = Dataset(data, ledger=book, bounds=_bounds(bounds), budget=budget, actor=actor, name=data.name)
    if kind == "count":
        answer: Any = ds.count(epsilon=epsilon, delta=delta, mechanism=mechanism)
    elif kind in ("sum", "mean"):
        answer = getattr(ds, kind)(column, epsilon=epsilon, delta=delta, mechanism=mechanism)
    elif kind == "histogram":
        cats = [c.strip() for c in categories.split(",")] if categories else None
        answer = ds.histogram(column, epsilon=epsilon, delta=delta, mechanism=mechanism, categories=cats, bins=bins)
    else:
        answer = ds.quantile(column, q, epsilon=epsilon)
    b = ds.ledger.budget(ds.dataset_id)
    doc = {"query": kind, "column": column, "answer": answer, "dataset_id": ds.dataset_id,
           "spent": {"epsilon": b.spent_epsilon, "delta": b.spent_delta},
           "remaining": {"epsilon": b.remaining_epsilon, "delta": b.remaining_delta}}
    emit(doc, lambda c: c.print(f"{kind}{' ' + column if column else ''}: {answer}\nbudget left: epsilon "
                                f"{b.remaining_epsilon:g}, delta {b.remaining_delta:g}", markup=False,
                                highlight=False), as_json=as_json)


def register_into(data_app: typer.Typer) -> None:
    data_app.command("query", help="DP aggregate query charged to the privacy-budget ledger.")(query)
