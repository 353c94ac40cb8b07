"""`torchshield keys`: master keys, signing keys, and key rotation."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from torchshield.cli.output import JSON_OPTION, emit, fail
from torchshield.errors import InputError, KeyMaterialError, ShieldError

keys_app = typer.Typer(help="Create master and signing keys; rotate keys without re-encrypting data.",
                       no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(keys_app, name="keys")


def _passphrase_twice() -> str:
    env = os.environ.get("TORCHSHIELD_PASSPHRASE")
    if env:
        return env
    first = typer.prompt("new passphrase", hide_input=True)
    if first != typer.prompt("repeat passphrase", hide_input=True):
        raise InputError("the two passphrases differ")
    return first


@keys_app.command("init")
def init(out: Path = typer.Option(..., "--out", "-o", help="Key file to create (mode 0600)."),
         passphrase: bool = typer.Option(False, "--passphrase",
                                         help="Derive the key from a passphrase (scrypt); the file keeps "
                                              "only the salt and parameters."),
         as_json: bool = JSON_OPTION) -> None:
    """Create a new 32-byte master key file. Refuses to overwrite an existing file."""
    from torchshield.crypto.keys import write_key_file, write_passphrase_key_file

    key = write_passphrase_key_file(out, _passphrase_twice()) if passphrase else write_key_file(out)
    emit({"path": str(out), "key_id": key.key_id, "kind": "passphrase" if passphrase else "random"},
         lambda c: c.print(f"wrote {out} (key id {key.key_id}, mode 0600). Keep it secret; back it up."),
         as_json=as_json)


@keys_app.command("id")
def key_id(key_file: Path = typer.Argument(..., help="A master key file."), as_json: bool = JSON_OPTION) -> None:
    """Print the public id of a master key (safe to share; it reveals nothing about the key)."""
    from torchshield.crypto.keys import read_key_file

    key = read_key_file(key_file)
    emit({"path": str(key_file), "key_id": key.key_id}, lambda c: c.print(key.key_id), as_json=as_json)


@keys_app.command("signing-init")
def signing_init(out: Path = typer.Option(..., "--out", "-o", help="Prefix: writes PREFIX.key and PREFIX.pub."),
                 as_json: bool = JSON_OPTION) -> None:
    """Create an Ed25519 signing key pair (PREFIX.key mode 0600, PREFIX.pub to share)."""
    from torchshield.crypto.signing import fingerprint, generate_signing_key, load_public_key

    key_path, pub_path = generate_signing_key(out)
    fp = fingerprint(load_public_key(pub_path))
    emit({"key": str(key_path), "public_key": str(pub_path), "fingerprint": fp},
         lambda c: c.print(f"wrote {key_path} (secret) and {pub_path} (share it); signer {fp}"),
         as_json=as_json)


@keys_app.command("rotate")
def rotate(files: list[Path] = typer.Argument(..., help="Bundles (.tsb), encrypted files or store vaults."),
           old: Path = typer.Option(..., "--old", help="Key file the data is encrypted with now."),
           new: Path = typer.Option(..., "--new", help="Key file to re-wrap the data keys with."),
           as_json: bool = JSON_OPTION) -> None:
    """Re-wrap data keys under a new master key; payloads are not re-encrypted."""
    from torchshield.crypto.keys import read_key_file

    old_key, new_key = read_key_file(old), read_key_file(new)
    if old_key.same_as(new_key):
        raise KeyMaterialError("--old and --new are the same key", hint="create a new one with: keys init")
    results = []
    for path in files:
        try:
            results.append({"path": str(path), "status": "rotated", "rewrapped": _rotate_one(path, old_key,
                                                                                              new_key)})
        except ShieldError as exc:
            results.append({"path": str(path), "status": "error", "error": str(exc),
                            "exit_code": exc.exit_code})

    def human(c) -> None:  # type: ignore[no-untyped-def]
        for r in results:
            if r["status"] == "rotated":
                c.print(f"[green]rotated[/] {r['path']} ({r['rewrapped']} data key(s) re-wrapped)")
            else:
                c.print(f"[red]failed[/]  {r['path']}: {r['error']}")

    emit({"old_key_id": old_key.key_id, "new_key_id": new_key.key_id, "files": results}, human,
         as_json=as_json)
    errors = [r["exit_code"] for r in results if r["status"] == "error"]
    if errors:
        fail(max(errors))


def _rotate_one(path: Path, old, new) -> int:  # type: ignore[no-untyped-def]
    from torchshield.crypto.stream import rotate_file_key
    from torchshield.model.bundle import is_bundle, rotate_key

    if path.is_dir():
        try:
            from torchshield.store import is_vault, rotate_master_key
        except ImportError:
            raise InputError(f"{path} is a directory and this build has no store support") from None
        if not is_vault(str(path)):
            raise InputError(f"{path} is a directory but not a torchshield store")
        return int(rotate_master_key(str(path), old, new))
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if is_bundle(path):
        if not rotate_key(path, old, new):
            raise InputError(f"{path} is not encrypted; there is no data key to rotate")
        return 1
    rotate_file_key(path, old, new)
    return 1


@keys_app.command("encrypt")
def encrypt(src: Path = typer.Argument(..., help="File to encrypt."),
            out: Path = typer.Option(..., "--out", "-o", help="Encrypted output (TSE format)."),
            key_file: Path | None = typer.Option(None, "--key-file", "-k", help="Master key file."),
            as_json: bool = JSON_OPTION) -> None:
    """Encrypt any file with the streaming format (constant memory, tamper-evident)."""
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.crypto.stream import encrypt_file

    key = resolve_master_key(key_file=key_file)
    assert key is not None
    n = encrypt_file(src, out, key)
    emit({"input": str(src), "output": str(out), "bytes": n, "key_id": key.key_id},
         lambda c: c.print(f"encrypted {n} bytes into {out} (key id {key.key_id})"), as_json=as_json)


@keys_app.command("decrypt")
def decrypt(src: Path = typer.Argument(..., help="Encrypted file (TSE format)."),
            out: Path = typer.Option(..., "--out", "-o", help="Plaintext output."),
            key_file: Path | None = typer.Option(None, "--key-file", "-k", help="Master key file."),
            as_json: bool = JSON_OPTION) -> None:
    """Decrypt a file made by `keys encrypt`; writes nothing unless every chunk authenticates."""
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.crypto.stream import decrypt_file

    if not src.is_file():
        raise InputError(f"{src} is not a readable file")
    key = resolve_master_key(key_file=key_file)
    assert key is not None
    n = decrypt_file(src, out, key)
    emit({"input": str(src), "output": str(out), "bytes": n},
         lambda c: c.print(f"decrypted {n} bytes into {out}"), as_json=as_json)
