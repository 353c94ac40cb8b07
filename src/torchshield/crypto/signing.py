"""Ed25519 signing keys: who made a bundle.

A signing key file is PKCS#8 PEM (mode 0600); the public key is SubjectPublicKeyInfo PEM.
A signer is named by its fingerprint, ``ed25519:`` + the first 16 bytes of SHA-256 of the raw
public key, in hex. Verification failures raise ``SignatureError`` with one opaque reason."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from torchshield.atomic import atomic_write_bytes
from torchshield.errors import KeyMaterialError, SignatureError

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "fingerprint",
    "generate_signing_key",
    "load_public_key",
    "load_signing_key",
    "public_key_from_raw",
    "raw_public_key",
    "verify_signature",
]


def raw_public_key(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SignatureError("the embedded public key is malformed") from None


def fingerprint(pub: Ed25519PublicKey) -> str:
    return "ed25519:" + hashlib.sha256(raw_public_key(pub)).digest()[:16].hex()


def _key_paths(out_prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(out_prefix)
    base = p.with_suffix("") if p.suffix in (".key", ".pub") else p
    return base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")


def generate_signing_key(out_prefix: str | os.PathLike[str], *,
                         overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (0600) and ``PREFIX.pub``; refuse to overwrite either."""
    key_path, pub_path = _key_paths(out_prefix)
    if not overwrite:
        for p in (key_path, pub_path):
            if p.exists():
                raise KeyMaterialError(f"{p} already exists", hint="choose another --out or remove it first")
    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(key_path, pem, mode=0o600, overwrite=overwrite)
    atomic_write_bytes(pub_path, pub, mode=0o644, overwrite=overwrite)
    return key_path, pub_path


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    if p.is_dir():
        raise KeyMaterialError(f"{what} {p} is a directory", hint="pass the key file itself")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(f"{what} {p} does not exist",
                               hint="create a pair with: torchshield keys signing-init --out signer") from None


def load_signing_key(path: str | os.PathLike[str] | Ed25519PrivateKey) -> Ed25519PrivateKey:
    if isinstance(path, Ed25519PrivateKey):
        return path
    data = _read(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyMaterialError(f"signing key {path} is not an unencrypted PEM private key",
                               hint="create one with: torchshield keys signing-init --out signer") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"signing key {path} is not an Ed25519 key")
    return key


def load_public_key(source: str | os.PathLike[str] | bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    """A public key from a ``.pub`` PEM file, PEM bytes, 32 raw bytes, or a private key file."""
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    data = source if isinstance(source, bytes) else _read(source, "public key")
    if len(data) == 32:
        return public_key_from_raw(data)
    try:
        if b"PRIVATE KEY" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            key = priv.public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyMaterialError(f"{source if not isinstance(source, bytes) else 'the key'} is not a PEM "
                               "Ed25519 public key", hint="pass the signer's .pub file") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyMaterialError("the public key is not an Ed25519 key")
    return key


def verify_signature(pub: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    try:
        pub.verify(signature, message)
    except InvalidSignature:
        raise SignatureError("the signature does not verify: the content was changed after "
                             "signing, or it was signed by another key") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
