"""`torchshield model`: protect, inspect, verify, export bundles; scan any model file;
watermark and obfuscate (those commands live in their own modules and plug in here)."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, check_bundle_output, emit, fail, progress
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


def _architecture(arch: str | None, factory: str | None, options: list[str]) -> dict[str, Any] | None:
    kwargs = _parse_metadata(options)
    if arch and factory:
        raise InputError("give --arch or --factory, not both")
    if arch:
        return {"kind": "registry", "name": arch, "kwargs": kwargs}
    if factory:
        from torchshield.model.sources.factory import parse_target

        parse_target(factory)
        return {"kind": "factory", "target": factory, "kwargs": kwargs}
    if options:
        raise InputError("--arch-option needs --arch or --factory")
    return None


def _input_spec(shape: str | None, value_range: str | None, dtype: str | None) -> dict[str, Any] | None:
    spec: dict[str, Any] = {}
    if shape:
        try:
            spec["shape"] = [int(v) for v in shape.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--input-shape: expected comma-separated integers (C,H,W), got {shape!r}") from None
        spec["kind"] = "image" if len(spec["shape"]) == 3 else "tensor"
        spec.setdefault("dtype", "float32")
    if value_range:
        try:
            lo, hi = (float(v) for v in value_range.split(","))
        except ValueError:
            raise InputError(f"--input-range: expected 'lo,hi', got {value_range!r}") from None
        if not lo < hi:
            raise InputError(f"--input-range: lo must be < hi, got {value_range!r}")
        spec.update(min=lo, max=hi)
    if dtype:
        spec["dtype"] = dtype
    return spec or None


@model_app.command("protect")
def protect(src: Path = typer.Argument(..., help="Model: a Hugging Face directory (sharded or not), or a file: "
                                       ".pt/.pth/.bin (weights only), .safetensors or .tsb."),
            out: Path = typer.Option(..., "--out", "-o", help="Bundle to write (.tsb)."),
            encrypt: bool = typer.Option(False, "--encrypt", help="Encrypt the tensor data."),
            key_file: Path | None = KEY_FILE,
            sign: Path | None = typer.Option(None, "--sign", help="Ed25519 signing key file."),
            source_key: Path | None = typer.Option(None, "--source-key-file",
                                                   help="Key of an encrypted input bundle, if different."),
            arch: str | None = typer.Option(None, "--arch", help="Architecture name for a weights file "
                                            "(registered, or a torchvision model name)."),
            factory: str | None = typer.Option(None, "--factory", help="package.module:function building the "
                                               "model for a weights file."),
            arch_option: list[str] = typer.Option([], "--arch-option", help="NAME=VALUE passed to --arch/--factory "
                                                  "(e.g. num_classes=10)."),
            input_shape: str | None = typer.Option(None, "--input-shape", help="One example's shape, e.g. 3,32,32."),
            input_range: str | None = typer.Option(None, "--input-range", help="Valid input values 'lo,hi'."),
            keep_training_state: bool = typer.Option(False, "--keep-training-state", help="Keep the optimizer "
                                                     "state, epoch, ... of a training checkpoint."),
            metadata: list[str] = typer.Option([], "--metadata", "-m", help="NAME=VALUE (JSON values allowed)."),
            force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
            as_json: bool = JSON_OPTION) -> None:
    """Turn a model into one bundle (weights, architecture, preprocessing): optionally encrypted and signed.

    Every file read is scanned first; tied tensors are stored once."""
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.model.header import inspect
    from torchshield.model.loading import protect_model

    signer = check_bundle_output(out, force, sign)
    if not src.exists():
        raise InputError(f"{src} does not exist")
    key = resolve_master_key(key_file=key_file, required=encrypt)
    if key_file is not None and not encrypt:
        raise KeyMaterialError("--key-file given without --encrypt",
                               hint="add --encrypt to encrypt the bundle, or drop --key-file")
    architecture = _architecture(arch, factory, arch_option)
    with progress(f"protecting {src.name}") as _:
        report = protect_model(src, out, key=key if encrypt else None, sign_with=signer, architecture=architecture,
                               input_spec=_input_spec(input_shape, input_range, None),
                               keep_training_state=keep_training_state, metadata=_parse_metadata(metadata),
                               # the key resolved once above (a passphrase is asked for once)
                               source_key=resolve_master_key(key_file=source_key, required=False)
                               if source_key is not None else key,
                               overwrite=force)
    info = inspect(out).to_dict()
    doc = {**info, "protect": report.to_dict()}

    def human(c) -> None:  # type: ignore[no-untyped-def]
        c.print(f"wrote {out}: {info['tensor_count']} tensors, {info['parameter_count']:,} parameters, "
                f"{'encrypted (key id ' + str(info['key_id']) + ')' if info['encrypted'] else 'not encrypted'}, "
                f"{'signed by ' + str(info['signer']) if info['signed'] else 'not signed'}", highlight=False)
        c.print(f"architecture: {report.architecture or 'not recorded (tensors only; add --arch or --factory)'}",
                highlight=False)
        if report.tied:
            c.print(f"tied tensors stored once: {len(report.tied)} ({', '.join(list(report.tied)[:3])})",
                    highlight=False)
        if report.dropped:
            c.print(f"dropped {len(report.dropped)} training-state entries: "
                    f"{', '.join(f'{k} ({v})' for k, v in report.dropped.items())}; "
                    "keep them with --keep-training-state", highlight=False)
        elif report.kept_training_state:
            c.print("training state kept (optimizer, epoch, ...)", highlight=False)

    emit(doc, human, as_json=as_json)


@model_app.command("inspect")
def inspect_cmd(bundle: Path = typer.Argument(..., help="A .tsb bundle."), as_json: bool = JSON_OPTION) -> None:
    """Show a bundle's manifest: tensors, encryption, signer, privacy, watermark, provenance."""
    from rich.table import Table

    from torchshield.model.header import inspect  # no torch: a header read takes milliseconds

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
        arch = info.get("architecture") or {}
        if arch:
            label = arch.get("class") or arch.get("name") or arch.get("target") or ""
            c.print(f"[bold]architecture[/]: {arch.get('kind')} {label}", highlight=False)
        if info.get("tied"):
            c.print(f"[bold]tied[/]: {json.dumps(info['tied'])}", highlight=False)
        if info.get("files"):
            c.print(f"[bold]files[/]: {', '.join(info['files'])}", highlight=False)
        for slot in ("preprocessing", "training_state", "metadata", "privacy", "watermark", "provenance"):
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
           out: Path = typer.Option(..., "--out", "-o", help="File (safetensors) or directory (hf) to write."),
           fmt: str = typer.Option("safetensors", "--format", "-f", help="safetensors (one file of tensors) or hf "
                                   "(a directory from_pretrained reads)."),
           key_file: Path | None = KEY_FILE,
           pubkey: Path | None = typer.Option(None, "--pubkey", "-p", help="Require this signer."),
           force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
           as_json: bool = JSON_OPTION) -> None:
    """Explicitly decrypt a bundle back to plain files (plaintext on disk!)."""
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.model.header import inspect

    if fmt not in ("safetensors", "hf"):
        raise InputError(f"--format must be safetensors or hf, got {fmt!r}")
    if out.exists() and not force:
        raise InputError(f"{out} already exists", hint="pass --force to overwrite it")
    info = inspect(bundle)
    key = resolve_master_key(key_file=key_file, required=info.encrypted)
    if fmt == "hf":
        from torchshield.model.loading import export_hf

        names = export_hf(bundle, out, key=key, verify_with=pubkey, overwrite=force)
        emit({"bundle": str(bundle), "output": str(out), "format": "hf", "files": names},
             lambda c: c.print(f"exported to {out}/ ({len(names)} files, plaintext): {', '.join(names)}",
                               highlight=False), as_json=as_json)
        return
    from safetensors.torch import save as st_save

    from torchshield.atomic import atomic_write_bytes
    from torchshield.model.bundle import load

    tensors = load(bundle, key=key, verify_with=pubkey)
    # Tensors are views of one buffer (tied names share one); safetensors wants separate storages.
    tied = set(info.manifest.get("aliases") or {})
    data = st_save({k: v.clone() for k, v in tensors.items() if k not in tied},
                   metadata={"exported_from": bundle.name, "object_id": info.manifest["object_id"]})
    atomic_write_bytes(out, data, mode=0o600, overwrite=force)
    n = len(tensors) - len(tied)
    emit({"bundle": str(bundle), "output": str(out), "format": "safetensors", "tensors": n, "tied_left_out": sorted(tied)},
         lambda c: c.print(f"exported {n} tensors to {out} (plaintext, mode 0600)"), as_json=as_json)
