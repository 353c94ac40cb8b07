"""The ``.tsb`` header, read without torch: prefix, manifest, key slot and trailer.

``torchshield model inspect`` and every command that only needs a bundle's description read
it through this module, so they start in a fraction of a second (importing torch alone takes
about 2 s). The layout is drawn in :mod:`torchshield.model.bundle`. Nothing here reads or
hashes the tensor data; :func:`inspect` checks the structure and the manifest digest only.

Manifest versions. ``format_version`` (in the binary prefix) fixes the byte layout and the
algorithms; ``manifest_version`` (in the manifest, absent = 1) counts what the manifest may
hold. Version 2 added ``architecture``, ``preprocessing``, ``aliases``, ``files`` and
``training_state``; a reader treats every one of them as optional, so version-1 bundles load
unchanged."""

from __future__ import annotations

import io
import json
import os
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import blake3

from torchshield.crypto.envelope import WRAPPED_KEY_SIZE, WrappedKey
from torchshield.crypto.stream import ciphertext_length, valid_chunk_size
from torchshield.errors import FormatError, InputError, IntegrityError

__all__ = ["BundleInfo", "inspect", "is_bundle"]

MAGIC = b"\x89TSB\r\n\x1a\n"
END_MAGIC = b"TSB-END1"
VERSION = 1
FLAG_ENCRYPTED = 0x01
ALIGN = 64
_PREFIX = struct.Struct("<8sBBHI")  # magic, version, flags, reserved, manifest length
_TRAILER = struct.Struct("<32s32sI8s")  # data digest, manifest digest, signature length, end magic
_MAX_MANIFEST = 64 << 20
_SIG_DOMAIN = b"torchshield/bundle-signature/v1"
_STREAM_ALG = "AES-256-GCM-STREAM-v1"
_SLOTS = ("privacy", "watermark", "provenance")
MANIFEST_VERSION = 2
# Entries of the data section that are not model weights (manifest v2).
FILE_PREFIX = "__file__/"
STATE_PREFIX = "__state__/"

def _pad(n: int) -> int:
    return -n % ALIGN


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class _Layout:
    path: Path
    prefix: bytes
    flags: int
    manifest: dict[str, Any]
    manifest_digest: bytes
    keyslot_offset: int
    data_offset: int
    stored_length: int
    data_digest: bytes
    signature: dict[str, Any] | None
    file_size: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)


def _open_checked(path: str | os.PathLike[str]) -> tuple[Path, io.BufferedReader, int]:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a directory, not a bundle", hint="pass a .tsb file")
    try:
        fh = open(p, "rb")
    except FileNotFoundError:
        raise InputError(f"{p} does not exist") from None
    except PermissionError:
        raise InputError(f"{p} cannot be read (permission denied)") from None
    return p, fh, os.fstat(fh.fileno()).st_size


def _read_layout(path: str | os.PathLike[str], fh: BinaryIO | None = None) -> _Layout:
    p, f, size = _open_checked(path) if fh is None else (Path(path), fh, os.fstat(fh.fileno()).st_size)
    try:
        return _parse_layout(p, f, size)
    finally:
        if fh is None:
            f.close()


def _parse_layout(p: Path, f: BinaryIO, size: int) -> _Layout:
    if size == 0:
        raise FormatError(f"{p} is empty, not a bundle")
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or not prefix.startswith(MAGIC):
        raise FormatError(f"{p} is not a torchshield bundle (.tsb)",
                          hint="make one with: torchshield model protect MODEL --out model.tsb")
    _magic, version, flags, reserved, mlen = _PREFIX.unpack(prefix)
    if version != VERSION:
        raise FormatError(f"{p} is bundle format version {version}; this torchshield reads version {VERSION}",
                          hint="upgrade torchshield")
    if reserved != 0 or flags & ~FLAG_ENCRYPTED:
        raise IntegrityError(f"{p}: the bundle header was altered (unknown flags)")
    if mlen > min(_MAX_MANIFEST, size):
        raise IntegrityError(f"{p}: the manifest length field is out of range: the header was altered "
                             "or the file truncated")
    manifest_bytes = f.read(mlen)
    if size < _PREFIX.size + mlen + _TRAILER.size:
        raise IntegrityError(f"{p} is truncated: it is shorter than its header declares")
    f.seek(size - _TRAILER.size)
    data_digest, manifest_digest, sig_len, end = _TRAILER.unpack(f.read(_TRAILER.size))
    if end != END_MAGIC:
        raise IntegrityError(f"{p} was truncated or extended: the end marker is missing")
    if not secrets.compare_digest(blake3.blake3(prefix + manifest_bytes).digest(), manifest_digest):
        raise IntegrityError(f"{p}: the manifest was edited after the bundle was written",
                             hint="restore the original file; edited bundles cannot be trusted")
    try:
        manifest = json.loads(manifest_bytes)
        stored_length = _stored_length(manifest, bool(flags & FLAG_ENCRYPTED))
    except (ValueError, KeyError, TypeError):
        raise FormatError(f"{p}: the manifest is not a valid bundle manifest") from None
    keyslot_offset = _PREFIX.size + mlen
    head = keyslot_offset + (WRAPPED_KEY_SIZE if flags & FLAG_ENCRYPTED else 0)
    data_offset = head + _pad(head)
    expected = data_offset + stored_length + sig_len + _TRAILER.size
    if size != expected:
        how = "truncated" if size < expected else "extended"
        raise IntegrityError(f"{p} is {size} bytes but its header declares {expected}: the file was {how}")
    f.seek(keyslot_offset)
    between = f.read(data_offset - keyslot_offset)
    if any(between[WRAPPED_KEY_SIZE if flags & FLAG_ENCRYPTED else 0:]):
        raise IntegrityError(f"{p}: padding bytes before the data were altered")
    signature = None
    if sig_len:
        f.seek(size - _TRAILER.size - sig_len)
        try:
            signature = json.loads(f.read(sig_len))
            if not isinstance(signature, dict):
                raise ValueError
        except ValueError:
            raise IntegrityError(f"{p}: the signature block is damaged") from None
    return _Layout(path=p, prefix=prefix, flags=flags, manifest=manifest, manifest_digest=manifest_digest,
                   keyslot_offset=keyslot_offset, data_offset=data_offset, stored_length=stored_length,
                   data_digest=data_digest, signature=signature, file_size=size)


def _stored_length(manifest: dict[str, Any], encrypted: bool) -> int:
    if manifest.get("format") != "torchshield-bundle":
        raise ValueError("not a bundle manifest")
    n = int(manifest["data_length"])
    if n < 0 or not isinstance(manifest["tensors"], dict):
        raise ValueError("bad data length")
    if encrypted:
        enc = manifest["encryption"]
        if enc.get("alg") != _STREAM_ALG:
            raise ValueError("unknown encryption")
        if not valid_chunk_size(enc.get("chunk_size")):
            raise ValueError("encryption.chunk_size is not a power of two from 4 KiB to 64 MiB")
        return ciphertext_length(n, enc["chunk_size"])
    return n


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle says about itself; reading it needs no key and checks the structure."""

    path: Path
    manifest: dict[str, Any]
    encrypted: bool
    signed: bool
    signer: str | None
    key_id: str | None
    file_size: int
    format_version: int = VERSION
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {"path": str(self.path), "format_version": self.format_version, "encrypted": self.encrypted,
                "signed": self.signed, "signer": self.signer, "key_id": self.key_id,
                "file_size": self.file_size, "object_id": m.get("object_id"), "created": m.get("created"),
                "tool": m.get("tool"), "tensor_count": len(self.tensors),
                "parameter_count": sum(_numel(t["shape"]) for t in self.tensors.values()),
                "tensors": self.tensors, "metadata": m.get("metadata"),
                "manifest_version": int(m.get("manifest_version") or 1),
                "architecture": m.get("architecture"), "preprocessing": m.get("preprocessing"),
                "tied": m.get("aliases") or {}, "files": sorted(m.get("files") or {}),
                "training_state": m.get("training_state"),
                **{slot: m.get(slot) for slot in _SLOTS}}


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _info(layout: _Layout, key_id: str | None) -> BundleInfo:
    m = dict(layout.manifest)
    m["encrypted"] = layout.encrypted
    m["signed"] = layout.signature is not None
    order = m.get("tensor_order") or list(m["tensors"])
    tensors = {k: {"dtype": m["tensors"][k]["dtype"], "shape": m["tensors"][k]["shape"]} for k in order
               if k in m["tensors"] and not k.startswith((FILE_PREFIX, STATE_PREFIX))}
    return BundleInfo(path=layout.path, manifest=m, encrypted=layout.encrypted,
                      signed=layout.signature is not None,
                      signer=(layout.signature or {}).get("fingerprint"), key_id=key_id,
                      file_size=layout.file_size, tensors=tensors)


def _key_slot(layout: _Layout, fh: BinaryIO) -> WrappedKey:
    fh.seek(layout.keyslot_offset)
    return WrappedKey.from_bytes(fh.read(WRAPPED_KEY_SIZE))


def inspect(path: str | os.PathLike[str]) -> BundleInfo:
    """Read a bundle's manifest and check its structure (no key needed, data not hashed)."""
    p, fh, _ = _open_checked(path)
    with fh:
        layout = _read_layout(p, fh)
        key_id = _key_slot(layout, fh).key_id_hex if layout.encrypted else None
    return _info(layout, key_id)


def is_bundle(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


