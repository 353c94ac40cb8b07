"""`torchshield report MODEL.tsb --data test.parquet --out report/`: assess a model, its data and
optionally its running service; write index.html and report.json. Exit 1 when a section fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, err_console, fail

__all__ = ["register"]


def report(
    model: Path = typer.Argument(..., help="Model file to assess (.tsb bundle, or any file for the scan)."),
    data: Path | None = typer.Option(None, "--data", help="Test table (CSV/Parquet) with the label column."),
    train_data: Path | None = typer.Option(None, "--train-data", help="The table the model was trained on."),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Master key: decrypts the model, verifies marks."
    ),
    pubkey: Path | None = typer.Option(None, "--pubkey", help="Expected signer's public key."),
    endpoint: str | None = typer.Option(None, "--endpoint", help="URL of a running torchshield service."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="TORCHSHIELD_API_KEY",
        help="API key for --endpoint (or $TORCHSHIELD_API_KEY).",
    ),
    endpoint_timeout: float = typer.Option(
        10.0, "--endpoint-timeout", min=0.1, max=600.0, help="Seconds to wait for each answer from --endpoint."
    ),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for index.html and report.json."),
    quick: bool = typer.Option(False, "--quick", help="Fewer attacks and examples (a fast first look)."),
    only: list[str] = typer.Option([], "--only", help="Run only these sections (ids, comma-separated or repeated): "
                                   "model-file, privacy, robustness, watermark, pii-residue, serving."),
    skip: list[str] = typer.Option([], "--skip", help="Leave these sections out (same ids as --only)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Assess a model and its data; write an HTML report with charts and report.json."""
    from torchshield.assess import AssessInputs, assess, write_report
    from torchshield.cli.output import STATE
    from torchshield.crypto.keys import resolve_master_key

    key = resolve_master_key(key_file=key_file, required=False)
    if pubkey is not None and not pubkey.is_file():
        from torchshield.errors import InputError

        raise InputError(f"--pubkey: {pubkey} does not exist")
    inputs = AssessInputs(
        model=model,
        data=data,
        train_data=train_data,
        key=key,
        pubkey=pubkey,
        endpoint=endpoint,
        api_key=api_key,
        endpoint_timeout_s=endpoint_timeout,
        quick=quick,
    )

    def on_section(section: Any) -> None:
        if not as_json and not STATE.quiet:
            err_console.print(f"  {section.title}: {section.verdict}", highlight=False)

    only_ids = tuple(i.strip() for item in only for i in item.split(",") if i.strip())
    skip_ids = tuple(i.strip() for item in skip for i in item.split(",") if i.strip())
    result = assess(inputs, only=only_ids or None, skip=skip_ids, on_section=on_section)
    paths = write_report(result, out)
    doc = {
        "verdict": result.verdict,
        "counts": result.counts(),
        "files": {k: str(v) for k, v in paths.items()},
        "sections": {s.id: s.verdict for s in result.sections},
    }
    emit(doc, lambda c: _human(c, result, paths), as_json=as_json)
    if result.verdict == "fail":
        fail(1)


def _human(console: Any, result: Any, paths: dict[str, Path]) -> None:
    from rich.table import Table

    table = Table(title=f"Assessment: {result.verdict.upper()}")
    for col in ("section", "verdict", "reason"):
        table.add_column(col)
    colours = {"pass": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}
    for s in result.sections:
        lead = next((f for f in s.findings if f.verdict == s.verdict), s.findings[0])
        table.add_row(s.title, f"[{colours[s.verdict]}]{s.verdict}[/]", lead.reason)
    console.print(table)
    console.print(f"report: {paths.get('html', paths['json'])}")


def register(root: typer.Typer) -> None:
    root.command("report")(report)
