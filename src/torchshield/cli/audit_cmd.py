"""`torchshield audit`: verify and export the serving audit log."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, fail

audit_app = typer.Typer(help="Verify and export the hash-chained audit log of the inference service.",
                        no_args_is_help=True)

DB_OPTION = typer.Option(os.environ.get("TORCHSHIELD_DB", "sqlite:///shield.db"), "--db",
                         help="SQLAlchemy URL of the serving database.")
KEY_OPTION = typer.Option(None, "--key-file", help="Master key file (else $TORCHSHIELD_KEY[_FILE]).")


def register(root: typer.Typer) -> None:
    root.add_typer(audit_app, name="audit")


def _log(db: str, key_file: Path | None) -> Any:
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.serve.audit import AuditLog
    from torchshield.serve.db import open_database

    master = resolve_master_key(key_file=key_file)
    return AuditLog(open_database(db, create=False), master)


@audit_app.command("verify")
def verify(db: str = DB_OPTION, key_file: Path | None = KEY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Check the whole chain: exit 0 intact, 1 tampered (naming the first bad record)."""
    report = _log(db, key_file).verify()
    emit(report.to_dict(), lambda c: c.print(
        f"audit log intact: {report.records} records, head {report.head_mac[:16]}…" if report.ok else
        f"[bold red]audit log TAMPERED[/]: first bad record {report.first_bad}: {report.reason}"), as_json=as_json)
    if not report.ok:
        fail(1)


@audit_app.command("export")
def export(since: str | None = typer.Option(None, "--since", help="ISO time, e.g. 2026-11-01 or "
                                                                 "2026-11-01T12:00:00+00:00."),
           db: str = DB_OPTION, key_file: Path | None = KEY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Write records (with their MACs) as JSON lines, or one JSON document with --json."""
    recs = _log(db, key_file).records(since=since)
    if as_json:
        emit({"records": recs}, as_json=True)
        return
    for r in recs:
        sys.stdout.write(json.dumps(r, sort_keys=True) + "\n")
