"""`torchshield store`: an encrypted, versioned, deduplicating vault for datasets and models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, fail
from torchshield.errors import InputError

store_app = typer.Typer(help="Encrypted, versioned artifact store: put/get, backup, verify, restore, prune.",
                        no_args_is_help=True)

VAULT = typer.Argument(..., help="Vault folder or fsspec URL (memory://..., s3://bucket/prefix).")
KEY_FILE = typer.Option(None, "--key-file", "-k",
                        help="Master key file (default: $TORCHSHIELD_KEY_FILE or $TORCHSHIELD_KEY).")


def register(root: typer.Typer) -> None:
    root.add_typer(store_app, name="store")


def _open(vault: str, key_file: Path | None):  # type: ignore[no-untyped-def]
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.store import Repository

    return Repository.open(vault, resolve_master_key(key_file=key_file))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _parse_meta(items: list[str]) -> dict[str, str]:
    meta = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InputError(f"--meta {item!r} is not KEY=VALUE")
        meta[k] = v
    return meta


@store_app.command("init")
def init(vault: str = VAULT, key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """Create an empty vault encrypted for the master key."""
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.store import Repository

    key = resolve_master_key(key_file=key_file)
    assert key is not None
    repo = Repository.init(vault, key)
    emit({"vault": vault, "vault_id": repo.config["vault_id"], "key_id": key.key_id},
         lambda c: c.print(f"created vault {vault} for key id {key.key_id}"), as_json=as_json)


@store_app.command("put")
def put(vault: str = VAULT, file: Path = typer.Argument(..., help="File to store."),
        name: str = typer.Option(..., "--name", help="Object name (no path separators)."),
        tag: str | None = typer.Option(None, "--tag", "-t", help="Version tag, e.g. v3."),
        meta: list[str] = typer.Option([], "--meta", help="KEY=VALUE metadata, encrypted with the object."),
        key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """Store FILE as a new immutable version of NAME (only chunks the vault lacks are written)."""
    from torchshield.store import put_file

    res = put_file(_open(vault, key_file), file, name=name, tag=tag, metadata=_parse_meta(meta))
    emit(res, lambda c: c.print(
        f"stored {name} as snapshot {res.snapshot.short_id}: {_size(res.bytes_read)}, "
        f"{res.new_chunks}/{res.chunks} chunks new, {_size(res.bytes_written)} written"), as_json=as_json)


@store_app.command("get")
def get(vault: str = VAULT, name: str = typer.Argument(..., help="Object name."),
        out: Path = typer.Option(..., "--out", "-o", help="File to write."),
        version: str = typer.Option("latest", "--version", "-v", help="Snapshot id prefix, tag, or latest."),
        force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
        key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """Write a version of NAME to OUT; refuses (exit 1, no output file) if any chunk is damaged.

    Partial files that killed gets left next to OUT are removed first (never a running one's)."""
    from torchshield.store import get_object, resolve_snapshot, sweep_partials

    repo = _open(vault, key_file)
    snap = resolve_snapshot(repo, version, name=name)
    swept = sweep_partials(out.parent)
    get_object(repo, snap, out, overwrite=force, sweep=False)
    emit({"snapshot": snap.summary(), "out": str(out), "partials_removed": [p.name for p in swept]},
         lambda c: c.print(f"wrote {out} ({_size(snap.size)}) from snapshot {snap.short_id}" + _swept(swept)),
         as_json=as_json)


def _swept(paths: list[Path]) -> str:
    return f"; removed {len(paths)} partial file(s) left by killed gets" if paths else ""


def _table(rows: list[dict[str, Any]], human_title: str):  # type: ignore[no-untyped-def]
    def human(c) -> None:  # type: ignore[no-untyped-def]
        from rich.table import Table

        t = Table(title=human_title)
        for col in ("id", "name", "tag", "created", "size"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["id"][:8], r["name"], r["tag"] or "", r["created"][:19], _size(r["size"]))
        c.print(t)
    return human


@store_app.command("list")
def list_(vault: str = VAULT, key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """The objects in the vault with their latest version."""
    from torchshield.store import load_snapshots

    latest: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for snap in load_snapshots(_open(vault, key_file)):
        latest[snap.name] = snap.summary()
        counts[snap.name] = counts.get(snap.name, 0) + 1
    rows = [dict(latest[n], versions=counts[n]) for n in sorted(latest)]
    emit({"objects": rows}, _table(rows, "objects (latest version)"), as_json=as_json)


@store_app.command("log")
def log(vault: str = VAULT, name: str = typer.Argument(..., help="Object name."),
        key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """Every version of NAME, oldest first."""
    from torchshield.store import load_snapshots

    rows = [s.summary() for s in load_snapshots(_open(vault, key_file), name=name)]
    if not rows:
        raise InputError(f"no object named {name!r} in {vault}", hint="`torchshield store list` shows the names")
    emit({"name": name, "versions": rows}, _table(rows, f"versions of {name}"), as_json=as_json)


@store_app.command("backup")
def backup(vault: str = VAULT, to: str = typer.Option(..., "--to", help="Backup folder or fsspec URL."),
           as_json: bool = JSON_OPTION) -> None:
    """Copy the vault's missing encrypted files to TO (incremental; needs no key)."""
    from torchshield.store import backup as run_backup

    res = run_backup(vault, to)
    emit(res, lambda c: c.print(f"backed up to {to}: {res.chunks_copied} chunks and {res.snapshots_copied} "
                                f"snapshots copied ({_size(res.bytes_copied)}), {res.chunks_skipped} chunks "
                                "already there"), as_json=as_json)


@store_app.command("verify")
def verify(vault: str = VAULT,
           sample: str | None = typer.Option(None, "--sample",
                                             help="Read only a random subset of chunks: 10% or a count."),
           key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """Check every manifest and chunk (tags, ids, sizes). Exit 1 if anything is damaged or missing."""
    from torchshield.store import verify as run_verify
    from torchshield.store.verify import parse_sample

    report = run_verify(_open(vault, key_file), sample=parse_sample(sample))

    def human(c) -> None:  # type: ignore[no-untyped-def]
        for p in report.problems:
            where = ", ".join(f"{o.get('name', '?')}@{o['snapshot'][:8]}" for o in p.objects)
            c.print(f"[red]{p.kind}[/] {p.detail}" + (f" (in {where})" if where else ""))
        c.print(f"{'[green]ok[/]' if report.ok else '[red]damaged[/]'}: {report.snapshots} snapshots, "
                f"{report.chunks_read}/{report.chunks_referenced} chunks read, "
                f"{report.unreferenced_chunks} unreferenced, {len(report.problems)} problem(s)")
    emit(report, human, as_json=as_json)
    if not report.ok:
        fail(1)


@store_app.command("restore")
def restore(vault: str = VAULT,
            snapshot: str = typer.Option(..., "--snapshot", "-s", help="Snapshot id (prefix), or latest."),
            to: Path = typer.Option(..., "--to", help="Folder to restore into (DIR/<object name>)."),
            force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
            key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """Restore a snapshot (or the latest version of every object) into a folder, byte-exact."""
    from torchshield.store import restore as run_restore
    from torchshield.store import sweep_partials

    repo = _open(vault, key_file)
    swept = sweep_partials(to) if to.is_dir() else []
    done = run_restore(repo, snapshot, to, overwrite=force, sweep=False)
    rows = [{"snapshot": s.id, "name": s.name, "path": str(p), "size": s.size} for s, p in done]

    def human(c) -> None:  # type: ignore[no-untyped-def]
        for r in rows:
            c.print(f"restored {r['name']} -> {r['path']}")
        if swept:
            c.print(_swept(swept).lstrip("; "))
    emit({"restored": rows, "partials_removed": [p.name for p in swept]}, human, as_json=as_json)


@store_app.command("prune")
def prune(vault: str = VAULT,
          keep_last: int | None = typer.Option(None, "--keep-last", help="Keep the N newest versions per object."),
          keep_daily: int | None = typer.Option(None, "--keep-daily",
                                                help="Keep the newest version of each of the last N days."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Report only; delete nothing."),
          key_file: Path | None = KEY_FILE, as_json: bool = JSON_OPTION) -> None:
    """Forget versions outside the keep policy and delete chunks no version uses."""
    from torchshield.store import prune as run_prune

    rep = run_prune(_open(vault, key_file), keep_last=keep_last, keep_daily=keep_daily, dry_run=dry_run)
    verb = "would forget" if dry_run else "forgot"
    emit(rep, lambda c: c.print(f"{verb} {len(rep.forgotten)} version(s), kept {len(rep.kept)}; "
                                f"{rep.chunks_deleted} chunks ({_size(rep.bytes_freed)}) "
                                f"{'to delete' if dry_run else 'deleted'}"), as_json=as_json)


@store_app.command("rotate-key")
def rotate_key(vault: str = VAULT, old: Path = typer.Option(..., "--old", help="Key file the vault uses now."),
               new: Path = typer.Option(..., "--new", help="Key file to re-wrap the vault's keys with."),
               as_json: bool = JSON_OPTION) -> None:
    """Re-wrap the vault's keys under a new master key; chunks are not rewritten. Safe to re-run."""
    from torchshield.crypto.keys import read_key_file
    from torchshield.store import rotate_master_key

    old_key, new_key = read_key_file(old), read_key_file(new)
    n = rotate_master_key(vault, old_key, new_key)
    emit({"vault": vault, "old_key_id": old_key.key_id, "new_key_id": new_key.key_id, "rewrapped": n},
         lambda c: c.print(f"rotated {vault} to key id {new_key.key_id} ({n} key(s) re-wrapped)"),
         as_json=as_json)
