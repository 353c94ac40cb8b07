"""`torchshield model`: protect, inspect, verify, export bundles; scan any model file;
watermark and obfuscate (those commands live in their own modules and plug in here)."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, fail, progress
from torchshield.errors import InputError, KeyMaterialError

model_app = typer.Typer(help="Protect model files: bundles, signatures, encryption, scanning, watermarks.",
                        no_args_is_help=True)

# Modules that add commands to this group (each exposes register_into(model_app)).
_EXTENSIONS = ("torchshield.cli.model_scan_cmd", "torchshield.cli.model_watermark_cmd")


def register(root: typer.Typer) -> None:
    for modname in _EXTENSIONS:
        if importlib.util.find_spec(modname) is not None:
            importlib.import_module(modname).register_into(model_app)
    root.add_typer(model_app, name="model")


KEY_FILE = typer.Option(None, "--key-file", "-k", help="Master key file (or $TORCHSHIELD_KEY_FILE).")


def _parse_metadata(items: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--metadata {item!r} is not NAME=VALUE")
        try:
            meta[name] = json.loads(value)
        except ValueError:
            meta[name] = value
    return meta


@model_app.command("protect")
def protect(src: Path = typer.Argument(..., help="Model: .pt/.pth/.bin (weights only), .safetensors or .tsb."),
            out: Path = typer.Option(..., "--out", "-o", help="Bundle to write (.tsb)."),
            encrypt: bool = typer.Option(False, "--encrypt", help="Encrypt the tensor data."),
            key_file: Path | None = KEY_FILE,
            sign: Path | None = typer.Option(None, "--sign", help="Ed25519 signing key file."),
            source_key: Path | None = typer.Option(None, "--source-key-file",
                                                   help="Key of an encrypted input bundle, if different."),
            metadata: list[str] = typer.Option([], "--metadata", "-m", help="NAME=VALUE (JSON values allowed)."),
            force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
            as_json: bool = JSON_OPTION) -> None:
    """Turn a checkpoint into one bundle: optionally encrypted, optionally signed."""
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.model.bundle import inspect, save
    from torchshield.model.checkpoint import read_checkpoint

    if out.exists() and not force:
        raise InputError(f"{out} already exists", hint="pass --force to overwrite it")
    key = resolve_master_key(key_file=key_file, required=encrypt)
    if key_file is not None and not encrypt:
        raise KeyMaterialError("--key-file given without --encrypt",
                               hint="add --encrypt to encrypt the bundle, or drop --key-file")
    with progress(f"protecting {src.name}") as _:
        tensors = read_checkpoint(src, key=resolve_master_key(key_file=source_key or key_file, required=False))
        meta = {"source": src.name, **_parse_metadata(metadata)}
        save(tensors, out, key=key if encrypt else None, sign_with=sign, metadata=meta,
             provenance={"source_file": src.name, "command": "model protect"})
    info = inspect(out).to_dict()
    emit(info, lambda c: c.print(
        f"wrote {out}: {info['tensor_count']} tensors, {info['parameter_count']:,} parameters, "
        f"{'encrypted (key id ' + str(info['key_id']) + ')' if info['encrypted'] else 'not encrypted'}, "
        f"{'signed by ' + str(info['signer']) if info['signed'] else 'not signed'}"), as_json=as_json)


@model_app.command("inspect")
def inspect_cmd(bundle: Path = typer.Argument(..., help="A .tsb bundle."), as_json: bool = JSON_OPTION) -> None:
    """Show a bundle's manifest: tensors, encryption, signer, privacy, watermark, provenance."""
    from rich.table import Table

    from torchshield.model.bundle import inspect

    info = inspect(bundle).to_dict()

    def human(c) -> None:  # type: ignore[no-untyped-def]
        c.print(f"[bold]{bundle}[/]  format v{info['format_version']}, {info['file_size']:,} bytes, "
                f"created {info['created']} by {info['tool']}")
        c.print(f"encrypted: {'yes, key id ' + str(info['key_id']) if info['encrypted'] else 'no'}    "
                f"signed: {info['signer'] or 'no'}")
        t = Table("tensor", "dtype", "shape")
        for name, e in list(info["tensors"].items())[:50]:
            t.add_row(name, e["dtype"], str(tuple(e["shape"])))
        c.print(t)
        if len(info["tensors"]) > 50:
            c.print(f"... and {len(info['tensors']) - 50} more tensors")
        for slot in ("metadata", "privacy", "watermark", "provenance"):
            if info.get(slot):
                c.print(f"[bold]{slot}[/]: {json.dumps(info[slot], ensure_ascii=False)[:2000]}")

    emit(info, human, as_json=as_json)


@model_app.command("verify")
def verify_cmd(bundle: Path = typer.Argument(..., help="A .tsb bundle."),
               pubkey: Path | None = typer.Option(None, "--pubkey", "-p",
                                                  help="Expected signer's public key (.pub)."),
               key_file: Path | None = KEY_FILE,
               as_json: bool = JSON_OPTION) -> None:
    """Check structure, data digest and signature; with a key, also decrypt every chunk.
    Exit 0 when everything verifies, 1 when a check fails."""
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.model.bundle import verify

    key = resolve_master_key(key_file=key_file, required=False) if key_file else None
    report = verify(bundle, pubkey=pubkey, key=key, require_signature=pubkey is not None)
    d = report.to_dict()

    def human(c) -> None:  # type: ignore[no-untyped-def]
        if report.ok:
            who = f"signed by {report.signer}" if report.signer else "not signed (origin unproven)"
            dec = ", every chunk decrypts" if report.decrypted else ""
            c.print(f"[green]OK[/] {bundle}: intact, {who}{dec}")
        else:
            for p in report.problems:
                c.print(f"[red]FAIL[/] {p}")

    emit(d, human, as_json=as_json)
    if not report.ok:
        fail(1)


@model_app.command("export")
def export(bundle: Path = typer.Argument(..., help="A .tsb bundle."),
           out: Path = typer.Option(..., "--out", "-o", help="Plain .safetensors file to write."),
           key_file: Path | None = KEY_FILE,
           pubkey: Path | None = typer.Option(None, "--pubkey", "-p", help="Require this signer."),
           force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
           as_json: bool = JSON_OPTION) -> None:
    """Explicitly decrypt a bundle back to a plain .safetensors file (plaintext on disk!)."""
    from safetensors.torch import save as st_save

    from torchshield.atomic import atomic_write_bytes
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.model.bundle import inspect, load

    if out.exists() and not force:
        raise InputError(f"{out} already exists", hint="pass --force to overwrite it")
    info = inspect(bundle)
    key = resolve_master_key(key_file=key_file, required=info.encrypted)
    tensors = load(bundle, key=key, verify_with=pubkey)
    # Tensors are views of one buffer; safetensors wants separate storages.
    data = st_save({k: v.clone() for k, v in tensors.items()},
                   metadata={"exported_from": bundle.name, "object_id": info.manifest["object_id"]})
    atomic_write_bytes(out, data, mode=0o600, overwrite=force)
    emit({"bundle": str(bundle), "output": str(out), "tensors": len(tensors)},
         lambda c: c.print(f"exported {len(tensors)} tensors to {out} (plaintext, mode 0600)"), as_json=as_json)
