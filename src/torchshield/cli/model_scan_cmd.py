"""`torchshield model scan PATH...`: say, without running anything, whether model files can run
code when loaded. A directory (a Hugging Face model folder, a sharded checkpoint) is scanned as
one set, every file in it listed. Exit 0 all safe, 1 any file unsafe, 2 a file could not be read."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from torchshield.cli.output import JSON_OPTION, emit, fail, progress

__all__ = ["register_into"]

_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "dim",
    "safe": "green",
    "unsafe": "bold red",
    "unreadable": "yellow",
}


def register_into(model_app: typer.Typer) -> None:
    """Add the ``scan`` command to the ``model`` group."""
    model_app.command("scan")(scan_command)


def scan_command(
    paths: list[Path] = typer.Argument(
        ...,
        help="Model files (.pt/.pth/.bin/.ckpt, .pkl, .npy/.npz, .safetensors, .keras/.h5, .tsb, "
        "any pickle: routed by content) or model directories, scanned as one set.",
    ),
    allow: list[str] = typer.Option(
        [],
        "--allow",
        metavar="MODULE.NAME",
        help="Accept this global (repeatable); 'pkg.*' accepts a whole package; "
        "'trust_remote_code' accepts custom code (*.py, auto_map) in a directory.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Scan model files or directories for code that runs when they are loaded (static: nothing is
    imported or unpickled)."""
    from torchshield.model.scan import ScanReport, scan

    report = ScanReport()
    with progress("scanning", total=len(paths)) as advance:
        for path in paths:
            report.files.extend(scan(path, allow=allow).files)
            advance(1)
    emit(report.to_dict(), lambda console: _render(console, report), as_json=as_json)
    if report.exit_code:
        fail(report.exit_code)


def _render(console: Console, report: object) -> None:
    from torchshield.model.scan import ScanReport

    assert isinstance(report, ScanReport)
    for file in report.files:
        status = file.status
        detail = f" ({file.unreadable_reason})" if file.unreadable_reason else ""
        console.print(
            f"[{_STYLE[status]}]{status.upper()}[/] {file.path} [dim]{file.format}, "
            f"{file.pickles} pickle(s), {file.imports} import(s){detail}[/]",
            highlight=False,
        )
        if not file.findings:
            continue
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("severity", "member", "offset", "callable", "message"):
            table.add_column(column, overflow="fold")
        for f in file.findings:
            table.add_row(
                f"[{_STYLE.get(f.severity, '')}]{f.severity}[/]",
                f.member or "-",
                "-" if f.offset is None else str(f.offset),
                f.callable or "-",
                f.message,
            )
        console.print(table)
    counts = {s: sum(1 for f in report.files if f.status == s) for s in ("safe", "unsafe", "unreadable")}
    console.print(
        f"{len(report.files)} file(s): {counts['safe']} safe, {counts['unsafe']} unsafe, "
        f"{counts['unreadable']} unreadable"
    )
