"""`torchshield demo --out demo-output [--quick]`: run the whole life of a model on generated
data, show progress, end with where the report is and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, err_console, fail, progress

__all__ = ["register"]

_STYLE = {"ok": "green", "skipped": "yellow", "failed": "red"}


def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Folder for everything the demo makes."),
    quick: bool = typer.Option(False, "--quick", help="A reduced run (fewer rows, epochs and attacks)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the generated data and training."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the whole life of a model on synthetic patient data and write the report."""
    from torchshield.cli.output import STATE
    from torchshield.demo import STEPS, run_demo

    total = len(STEPS)
    show = not as_json and not STATE.quiet

    def on_start(i: int, title: str) -> None:
        if show:
            err_console.print(f"[bold][{i + 1}/{total}][/] {title} …", highlight=False)

    def on_step(r: Any) -> None:
        if show:
            err_console.print(
                f"      [{_STYLE[r.status]}]{r.status}[/] ({r.seconds:.1f} s) {r.summary}", highlight=False
            )

    state = run_demo(out, quick=quick, seed=seed, progress=progress if show else None,
                     on_start=on_start, on_step=on_step)
    doc = {
        "out": str(out),
        "seconds": state.facts.get("seconds"),
        "report": str(state.files.get("report", "")),
        "verdict": state.facts.get("verdict"),
        "steps": [r.to_dict() for r in state.results],
    }
    emit(doc, lambda c: _human(c, state), as_json=as_json)
    if any(r.status == "failed" for r in state.results):
        fail(1)


def _human(console: Any, state: Any) -> None:
    from rich.table import Table

    table = Table(title=f"torchshield demo ({state.facts.get('seconds')} s)")
    for col in ("step", "status", "s", "result"):
        table.add_column(col)
    for r in state.results:
        table.add_row(r.title, f"[{_STYLE[r.status]}]{r.status}[/]", f"{r.seconds:.1f}", r.summary)
    console.print(table)
    if "report" in state.files:
        console.print(f"report: {state.files['report']}  (verdict: {state.facts.get('verdict')})")
    else:
        console.print("no report was written (see the failed steps above)")


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
