"""`torchshield access`: API keys and roles of the inference service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, err_console
from torchshield.errors import InputError, PolicyError

access_app = typer.Typer(help="API keys and roles of the inference service.", no_args_is_help=True)

DB_OPTION = typer.Option(os.environ.get("TORCHSHIELD_DB", "sqlite:///shield.db"), "--db",
                         help="SQLAlchemy URL of the serving database.")
KEY_OPTION = typer.Option(None, "--key-file", help="Master key file (else $TORCHSHIELD_KEY[_FILE]).")


def register(root: typer.Typer) -> None:
    root.add_typer(access_app, name="access")


def _stores(db: str, key_file: Path | None) -> tuple[Any, Any]:
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.serve.access.keys import KeyStore
    from torchshield.serve.db import open_database
    from torchshield.serve.rbac import Authorizer

    master = resolve_master_key(key_file=key_file)
    database = open_database(db)
    return KeyStore(database, master), Authorizer(database)


def _show_new(new: Any, as_json: bool) -> None:
    def human(c: Any) -> None:
        c.print(f"key id   {new.key.key_id}\nrole     {new.key.role}\nmodels   {', '.join(new.key.models)}")
        c.print(f"token    {new.token}", highlight=False, soft_wrap=True)
        err_console.print("The token is shown once and stored only as a keyed hash: keep it now.")

    emit({"key": new.key.to_dict(), "token": new.token}, human, as_json=as_json)


@access_app.command("bootstrap")
def bootstrap(db: str = DB_OPTION, key_file: Path | None = KEY_OPTION, name: str = typer.Option("bootstrap admin"),
              as_json: bool = JSON_OPTION) -> None:
    """Create the first admin key (printed once). Refused once an active admin key exists."""
    keys, _ = _stores(db, key_file)
    if any(k.role == "admin" and k.status() == "active" for k in keys.list()):
        raise PolicyError("an active admin key exists already",
                          hint="create further keys with `torchshield access create-key`")
    _show_new(keys.create(role="admin", name=name, created_by="bootstrap"), as_json)


@access_app.command("create-key")
def create_key(role: str = typer.Option(..., "--role", help="admin, owner, predictor, auditor or monitor."),
               model: list[str] = typer.Option([], "--model", help="Model the key may use (repeat); "
                                                                  "default: all ('*')."),
               expires: str | None = typer.Option(None, "--expires", help="Lifetime, e.g. 12h, 30d, 4w."),
               name: str = typer.Option("", "--name", help="A label for people (not secret)."),
               rate: float | None = typer.Option(None, "--rate", help="Requests/second for this key."),
               burst: int | None = typer.Option(None, "--burst", help="Bucket size for this key."),
               db: str = DB_OPTION, key_file: Path | None = KEY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Create an API key; its token is printed once."""
    from torchshield.serve.access.keys import parse_duration

    keys, _ = _stores(db, key_file)
    seconds = parse_duration(expires) if expires else None
    _show_new(keys.create(role=role, models=model or ["*"], name=name, expires_in=seconds, created_by="cli",
                          rate_per_s=rate, burst=burst), as_json)


@access_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key id (16 hex characters) to revoke."),
           db: str = DB_OPTION, key_file: Path | None = KEY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Revoke a key: refused from the next request on, in every worker."""
    keys, _ = _stores(db, key_file)
    if keys.get(key_id) is None:
        raise InputError(f"no key with id {key_id!r}", hint="see `torchshield access list`")
    changed = keys.revoke(key_id)
    emit({"key_id": key_id, "revoked": True, "changed": changed},
         lambda c: c.print(f"revoked {key_id}" + ("" if changed else " (was revoked already)")), as_json=as_json)


@access_app.command("list")
def list_keys(db: str = DB_OPTION, key_file: Path | None = KEY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List keys (ids, roles, models, status; never tokens)."""
    from rich.table import Table

    keys, _ = _stores(db, key_file)
    rows = [k.to_dict() for k in keys.list()]

    def human(c: Any) -> None:
        t = Table("key id", "role", "models", "status", "name")
        for r in rows:
            t.add_row(r["key_id"], r["role"], ",".join(r["models"]), r["status"], r["name"])
        c.print(t)

    emit({"keys": rows}, human, as_json=as_json)


@access_app.command("roles")
def roles(db: str = DB_OPTION, key_file: Path | None = KEY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Show the roles and their permissions as stored in the database (Casbin policies)."""
    _, authz = _stores(db, key_file)
    authz.reload()
    table = authz.role_table()
    emit({"roles": table}, lambda c: [c.print(f"{r:<10} {', '.join(p)}") for r, p in table.items()],
         as_json=as_json)
