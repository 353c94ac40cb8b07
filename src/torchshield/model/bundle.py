"""The ``.tsb`` bundle: one file holding a model's tensors, a manifest, an optional Ed25519
signature, and optional encryption of the tensor data.

Threat model. Without the key, an encrypted bundle reveals the manifest (tensor names,
dtypes, shapes, user metadata) and nothing of the tensor bytes. Any change to the prefix, the
manifest or the data is detected: for encrypted bundles by the AEAD (the manifest digest is the
associated data of every chunk), for every bundle by the BLAKE3 digests in the trailer. A
signature binds the manifest and a digest of the stored data bytes (ciphertext when
encrypted), so ``verify`` proves who made a bundle without the decryption key. An unsigned
bundle proves nothing about its origin: anyone can rewrite one and its digests.

Layout (all integers little endian; see docs/format.md)::

    magic "\\x89TSB\\r\\n\\x1a\\n" (8) | version (1) = 1 | flags (1) bit0=encrypted | reserved (2)
    | manifest length (4) | manifest (canonical JSON, UTF-8)
    | wrapped data key (69, only if encrypted; outside every digest so keys can rotate in place)
    | zero padding to a multiple of 64
    | data: tensors back to back, each 64-byte aligned (plaintext), or their STREAM ciphertext
    | signature block (JSON, may be empty) | data digest (32) | manifest digest (32)
    | signature block length (4) | end magic "TSB-END1" (8)
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import mmap
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import blake3
import numpy as np
import torch

from torchshield._version import __version__
from torchshield.atomic import atomic_output
from torchshield.crypto import signing
from torchshield.crypto.envelope import new_data_key, rewrap, unwrap_data_key, wrap_data_key
from torchshield.crypto.keys import MasterKey
from torchshield.crypto.stream import (
    DEFAULT_CHUNK_SIZE,
    StreamCipher,
    StreamWriter,
    decrypt_into,
    valid_chunk_size,
)
from torchshield.errors import FormatError, InputError, IntegrityError, KeyMaterialError, SignatureError
from torchshield.model.dtypes import dtype_from_name, dtype_name
from torchshield.model.header import (
    _PREFIX,
    _SIG_DOMAIN,
    _SLOTS,
    _STREAM_ALG,
    _TRAILER,
    ALIGN,
    END_MAGIC,
    FILE_PREFIX,
    FLAG_ENCRYPTED,
    MAGIC,
    MANIFEST_VERSION,
    STATE_PREFIX,
    VERSION,
    BundleInfo,
    _canonical,
    _key_slot,
    _Layout,
    _numel,
    _open_checked,
    _pad,
    _read_layout,
    inspect,
    is_bundle,
)

__all__ = ["BundleContents", "BundleInfo", "TrainingState", "VerifyReport", "inspect", "is_bundle", "load",
           "load_contents", "rotate_key", "save", "shared_tensors", "verify"]

Tensors = dict[str, torch.Tensor]


def _master_key(key: Any) -> MasterKey:
    """Bundles take a resolved ``MasterKey`` only: keys are read once at the edge (the CLI, a service
    start, ``read_key_file``), never looked up here in files or the environment."""
    if not isinstance(key, MasterKey):
        raise KeyMaterialError(f"key= must be a MasterKey, not {type(key).__name__}",
                               hint="read it once with torchshield.crypto.keys.read_key_file(PATH)")
    return key


def _signed_message(prefix: bytes, manifest_digest: bytes, data_digest: bytes) -> bytes:
    return _SIG_DOMAIN + prefix[:12] + manifest_digest + data_digest


# --- writing -------------------------------------------------------------------------------

def _state_dict(obj: Any) -> Tensors:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict(keep_vars=False)
    if not isinstance(obj, Mapping):
        raise InputError(f"cannot save a {type(obj).__name__}",
                         hint="pass an nn.Module or a dict of tensor names to tensors")
    out: Tensors = {}
    for name, t in obj.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"tensor name {name!r} is not a non-empty string")
        if not isinstance(t, torch.Tensor):
            raise InputError(f"entry {name!r} is a {type(t).__name__}, not a tensor",
                             hint="bundles hold tensors only; put other values in metadata=")
        if t.is_sparse or t.layout != torch.strided:
            raise InputError(f"tensor {name!r} is not a dense tensor", hint="call .to_dense() first")
        out[name] = t.detach()
    return out


def shared_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``{alias: canonical}`` for tensors that are the same memory as an earlier one.

    Two names alias when they view the same storage at the same offset with the same dtype,
    shape and strides: tied weights (GPT-2's ``lm_head.weight`` is ``wte.weight``). Such a
    tensor is stored once and re-tied on load; partial overlaps are stored separately."""
    seen: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    for name, t in tensors.items():
        if t.numel() == 0 or t.device.type == "meta":
            continue
        ident = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape),
                 t.stride())
        if ident in seen:
            aliases[name] = seen[ident]
        else:
            seen[ident] = name
    return aliases


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]  # numpy's stubs do not declare the buffer protocol


def _json_slot(name: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}= is not JSON-serialisable ({exc})",
                         hint="use plain dicts, lists, strings and finite numbers") from None
    return value


def save(obj: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str], *,
         key: MasterKey | None = None,
         sign_with: str | os.PathLike[str] | signing.Ed25519PrivateKey | None = None,
         metadata: Mapping[str, Any] | None = None, privacy: Mapping[str, Any] | None = None,
         watermark: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
         architecture: Mapping[str, Any] | None = None, preprocessing: Mapping[str, Any] | None = None,
         files: Mapping[str, bytes] | None = None, training_state: TrainingState | None = None,
         chunk_size: int = DEFAULT_CHUNK_SIZE, overwrite: bool = True) -> Path:
    """Write ``obj`` (a module or a state dict) to a ``.tsb`` bundle at ``path``, atomically.

    ``key`` encrypts the tensor data (a resolved MasterKey: ``read_key_file(PATH)``);
    ``sign_with`` signs it (an Ed25519 key or key-file path). ``privacy``, ``watermark`` and
    ``provenance`` are JSON manifest slots filled by training, watermarking and the pipeline.

    Manifest v2 (all optional): ``architecture`` (how to rebuild the module, see
    ``torchshield.model.sources``), ``preprocessing`` (input spec, normalisation, tokenizer),
    ``files`` (small named files such as ``tokenizer.json``, stored, encrypted and signed with the
    weights) and ``training_state`` (optimizer tensors and JSON values). Tensors sharing memory
    (tied weights) are stored once; the manifest's ``aliases`` re-ties them on load."""
    if not valid_chunk_size(chunk_size):
        raise InputError(f"chunk_size={chunk_size!r} is not a power of two from 4 KiB to 64 MiB")
    weights = _state_dict(obj)
    aliases = shared_tensors(weights)
    tensors: Tensors = {k: v.to("cpu").contiguous() for k, v in weights.items() if k not in aliases}
    for fname, data in (files or {}).items():
        if not isinstance(data, (bytes, bytearray)) or not fname or "/" in fname or fname.startswith("."):
            raise InputError(f"files entry {fname!r} must be a plain file name with bytes")
        tensors[FILE_PREFIX + fname] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data \
            else torch.empty(0, dtype=torch.uint8)
    if training_state is not None:
        for sname, t in training_state.tensors.items():
            tensors[STATE_PREFIX + sname] = t.detach().to("cpu").contiguous()
    master = _master_key(key) if key is not None else None
    signer = signing.load_signing_key(sign_with) if sign_with is not None else None
    entries: dict[str, Any] = {}
    views: list[tuple[memoryview, int]] = []
    offset = 0
    for name, t in tensors.items():
        raw = _tensor_bytes(t)
        entry: dict[str, Any] = {"dtype": dtype_name(t.dtype, tensor=name), "shape": list(t.shape),
                                 "offsets": [offset, offset + len(raw)]}
        if master is None:  # digests of plaintext would let a keyless reader confirm guesses
            entry["digest"] = blake3.blake3(raw).hexdigest()
        entries[name] = entry
        pad = _pad(len(raw)) if name != next(reversed(tensors)) else 0
        views.append((raw, pad))
        offset += len(raw) + pad
    manifest: dict[str, Any] = {
        "format": "torchshield-bundle", "format_version": VERSION, "manifest_version": MANIFEST_VERSION,
        "object_id": secrets.token_hex(16),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "tool": f"torchshield {__version__}", "torch": torch.__version__,
        "tensors": entries, "tensor_order": list(entries), "data_length": offset, "digest_alg": "blake3",
        "metadata": _json_slot("metadata", dict(metadata or {})),
    }
    for slot, value in zip(_SLOTS, (privacy, watermark, provenance)):
        manifest[slot] = _json_slot(slot, dict(value) if value is not None else None)
    optional = {"architecture": architecture, "preprocessing": preprocessing, "aliases": aliases or None,
                "files": {k: FILE_PREFIX + k for k in files} if files else None,
                "training_state": training_state.values if training_state is not None else None}
    for slot, value in optional.items():
        if value is not None:
            manifest[slot] = _json_slot(slot, dict(value))
    salt = secrets.token_bytes(16)
    if master is not None:
        manifest["encryption"] = {"alg": _STREAM_ALG, "chunk_size": chunk_size, "salt": salt.hex()}
    manifest_bytes = _canonical(manifest)
    flags = FLAG_ENCRYPTED if master is not None else 0
    prefix = _PREFIX.pack(MAGIC, VERSION, flags, 0, len(manifest_bytes))
    manifest_digest = blake3.blake3(prefix + manifest_bytes).digest()
    slot_bytes = b""
    data_key = b""
    if master is not None:
        data_key = new_data_key()
        slot_bytes = wrap_data_key(master, data_key, context=bytes.fromhex(manifest["object_id"])).to_bytes()
    head = prefix + manifest_bytes + slot_bytes
    head += b"\x00" * _pad(len(head))

    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(head)
        hasher = blake3.blake3()
        if master is None:
            for raw, pad in views:
                fh.write(raw)
                hasher.update(raw)
                if pad:
                    fh.write(b"\x00" * pad)
                    hasher.update(b"\x00" * pad)
        else:
            cipher = StreamCipher(data_key, salt=salt, context_digest=manifest_digest)
            writer = StreamWriter(fh, cipher, chunk_size=chunk_size, hasher=hasher)
            for raw, pad in views:
                writer.write(raw)
                if pad:
                    writer.write(b"\x00" * pad)
            writer.close()
        data_digest = hasher.digest()
        sig_block = b""
        if signer is not None:
            sig = signer.sign(_signed_message(prefix, manifest_digest, data_digest))
            pub = signer.public_key()
            sig_block = _canonical({"alg": "ed25519", "fingerprint": signing.fingerprint(pub),
                                    "public_key": base64.b64encode(signing.raw_public_key(pub)).decode(),
                                    "signature": base64.b64encode(sig).decode()})
        fh.write(sig_block + _TRAILER.pack(data_digest, manifest_digest, len(sig_block), END_MAGIC))
    return Path(path)


# --- reading -------------------------------------------------------------------------------

def _check_signature(layout: _Layout, verify_with: Any) -> str:
    if layout.signature is None:
        raise SignatureError(f"{layout.path} is not signed",
                             hint="sign it with: torchshield model protect ... --sign signer.key")
    try:
        sig = base64.b64decode(layout.signature["signature"], validate=True)
        embedded = signing.public_key_from_raw(base64.b64decode(layout.signature["public_key"], validate=True))
    except (KeyError, ValueError, TypeError):
        raise SignatureError(f"{layout.path}: the signature block is malformed") from None
    pub = signing.load_public_key(verify_with) if verify_with is not None else embedded
    if signing.raw_public_key(pub) != signing.raw_public_key(embedded):
        raise SignatureError(f"{layout.path} was signed by {signing.fingerprint(embedded)}, "
                             f"not by the expected signer {signing.fingerprint(pub)}")
    signing.verify_signature(pub, sig, _signed_message(layout.prefix, layout.manifest_digest,
                                                       layout.data_digest))
    return signing.fingerprint(pub)


def _views(layout: _Layout, buf: torch.Tensor) -> Tensors:
    out: Tensors = {}
    n = buf.numel()
    entries = layout.manifest["tensors"]
    order = layout.manifest.get("tensor_order", list(entries))
    if sorted(order) != sorted(entries):
        raise FormatError(f"{layout.path}: the manifest's tensor order does not match its tensors")
    for name in order:
        e = entries[name]
        try:
            a, b = (int(x) for x in e["offsets"])
            dtype = dtype_from_name(e["dtype"], tensor=name)
            shape = [int(s) for s in e["shape"]]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{layout.path}: tensor {name!r} has a malformed entry") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not (0 <= a <= b <= n) or a % ALIGN or (b - a) != _numel(shape) * itemsize:
            raise IntegrityError(f"{layout.path}: tensor {name!r} has offsets outside the data or "
                                 "inconsistent with its shape")
        out[name] = buf[a:b].view(dtype).reshape(shape)
    return out


def _damaged_tensor(layout: _Layout, buf: torch.Tensor) -> str:
    for name, e in layout.manifest["tensors"].items():
        a, b = e["offsets"]
        if "digest" in e and blake3.blake3(_tensor_bytes(buf[a:b])).hexdigest() != e["digest"]:
            return f" (tensor {name!r} differs)"
    return ""


@dataclass(frozen=True)
class TrainingState:
    """What a training checkpoint holds besides the weights: tensors (optimizer moments, ...)
    stored in the data section, and JSON values (epoch, step, param_groups) in the manifest."""

    tensors: dict[str, torch.Tensor]
    values: dict[str, Any]


@dataclass(frozen=True)
class BundleContents:
    """Everything a bundle holds, decrypted and checked: weights (tied names re-tied to one
    tensor), named files, training state, and the manifest."""

    manifest: dict[str, Any]
    weights: Tensors
    files: dict[str, bytes]
    training_state: TrainingState | None

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self.manifest.get("aliases") or {})


def load(path: str | os.PathLike[str], *, key: MasterKey | None = None,
         verify_with: str | os.PathLike[str] | bytes | signing.Ed25519PublicKey | None = None,
         device: str | torch.device = "cpu", verify: bool = True) -> Tensors:
    """Load a bundle's weights into memory, never writing plaintext to disk.

    Unencrypted bundles are memory-mapped copy-on-write (no copy) after their BLAKE3 digest is
    checked. Encrypted bundles are decrypted chunk by chunk into one preallocated buffer; the
    returned tensors are views of it. ``verify_with`` (a public key) requires a valid signature
    by that signer; ``verify=False`` skips the digest check of unencrypted bundles. Tied names
    (the manifest's ``aliases``) map to the very same tensor as their canonical name; files and
    training state are left out (see :func:`load_contents`)."""
    return load_contents(path, key=key, verify_with=verify_with, device=device, verify=verify).weights


def load_contents(path: str | os.PathLike[str], *, key: MasterKey | None = None,
                  verify_with: str | os.PathLike[str] | bytes | signing.Ed25519PublicKey | None = None,
                  device: str | torch.device = "cpu", verify: bool = True) -> BundleContents:
    """Like :func:`load`, and also the bundle's files, training state and manifest."""
    p, fh, _ = _open_checked(path)
    with fh:
        layout = _read_layout(p, fh)
        if verify_with is not None:
            _check_signature(layout, verify_with)
        n = int(layout.manifest["data_length"])
        if layout.encrypted:
            buf = _decrypt(layout, fh, key, hash_data=verify_with is not None)
        else:
            buf = _map_plain(layout, fh, n, verify=verify or verify_with is not None)
    views = _views(layout, buf)
    files = {k[len(FILE_PREFIX):]: v.numpy().tobytes() for k, v in views.items() if k.startswith(FILE_PREFIX)}
    state = {k[len(STATE_PREFIX):]: v for k, v in views.items() if k.startswith(STATE_PREFIX)}
    weights = {k: v for k, v in views.items() if not k.startswith((FILE_PREFIX, STATE_PREFIX))}
    if torch.device(device).type != "cpu":
        weights = {k: v.to(device) for k, v in weights.items()}
    aliases = layout.manifest.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise FormatError(f"{p}: the manifest's aliases are malformed")
    for alias, target in aliases.items():
        if target not in weights or alias in weights:
            raise FormatError(f"{p}: tied tensor {alias!r} points at {target!r}, which the bundle does not hold")
        weights[alias] = weights[target]
    values = layout.manifest.get("training_state")
    if values is None and state:
        raise FormatError(f"{p}: the bundle holds training-state tensors but no training_state values")
    training = TrainingState(state, dict(values)) if values is not None else None
    return BundleContents(dict(layout.manifest), weights, files, training)


def _map_plain(layout: _Layout, fh: BinaryIO, n: int, *, verify: bool) -> torch.Tensor:
    if n == 0:
        buf = torch.empty(0, dtype=torch.uint8)
        if verify and not secrets.compare_digest(blake3.blake3(b"").digest(), layout.data_digest):
            raise IntegrityError(f"{layout.path}: the tensor data was changed")
        return buf
    # Copy-on-write map: the caller may modify tensors without touching the file.
    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    arr = np.frombuffer(mm, dtype=np.uint8, count=n, offset=layout.data_offset)
    buf = torch.from_numpy(arr)
    if verify:
        digest = blake3.blake3(memoryview(arr), max_threads=blake3.blake3.AUTO).digest()  # type: ignore[arg-type]  # numpy's stubs do not declare the buffer protocol
        if not secrets.compare_digest(digest, layout.data_digest):
            raise IntegrityError(f"{layout.path}: the tensor data was changed{_damaged_tensor(layout, buf)}",
                                 hint="the file is damaged or was tampered with; restore it from a backup")
    return buf


def _decrypt(layout: _Layout, fh: BinaryIO, key: Any, *, hash_data: bool) -> torch.Tensor:
    if key is None:
        raise KeyMaterialError(f"{layout.path} is encrypted and no key was given",
                               hint="pass key=read_key_file(PATH) (on the CLI: --key-file or $TORCHSHIELD_KEY_FILE)")
    master = _master_key(key)
    enc = layout.manifest["encryption"]
    object_id = bytes.fromhex(layout.manifest["object_id"])
    data_key = unwrap_data_key(master, _key_slot(layout, fh), context=object_id)
    cipher = StreamCipher(data_key, salt=bytes.fromhex(enc["salt"]), context_digest=layout.manifest_digest)
    n = int(layout.manifest["data_length"])
    buf = torch.empty(n, dtype=torch.uint8)
    hasher = blake3.blake3() if hash_data else None
    fh.seek(layout.data_offset)
    out = memoryview(buf.numpy()).cast("B") if n else memoryview(bytearray(0))  # type: ignore[arg-type]  # numpy's stubs do not declare the buffer protocol
    decrypt_into(fh, cipher, out, cipher_len=layout.stored_length, chunk_size=int(enc["chunk_size"]),
                 hasher=hasher)
    if hasher is not None and not secrets.compare_digest(hasher.digest(), layout.data_digest):
        raise IntegrityError(f"{layout.path}: the stored data does not match its signed digest")
    return buf


# --- verification and key rotation ---------------------------------------------------------

@dataclass(frozen=True)
class VerifyReport:
    path: Path
    ok: bool
    signed: bool
    signer: str | None
    encrypted: bool
    decrypted: bool
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "signed": self.signed, "signer": self.signer,
                "encrypted": self.encrypted, "decrypted": self.decrypted, "problems": self.problems}


def verify(path: str | os.PathLike[str], *, pubkey: Any = None, key: Any = None,
           require_signature: bool = False) -> VerifyReport:
    """Check everything checkable: structure, data digest, signature (against ``pubkey`` if
    given, else the embedded key), and with ``key`` every encrypted chunk. Raises on bad input
    (not a bundle), returns ``ok=False`` with the problem when a check fails."""
    p, fh, _ = _open_checked(path)
    problems: list[str] = []
    signer = None
    decrypted = False
    with fh:
        try:
            layout = _read_layout(p, fh)
        except IntegrityError as exc:
            return VerifyReport(p, False, False, None, False, False, [str(exc)])
        try:
            _hash_stored(layout, fh)
        except IntegrityError as exc:
            problems.append(str(exc))
        if layout.signature is not None or pubkey is not None or require_signature:
            try:
                signer = _check_signature(layout, pubkey)
            except SignatureError as exc:
                problems.append(str(exc))
        if layout.encrypted and key is not None and not problems:
            try:
                _decrypt(layout, fh, key, hash_data=False)
                decrypted = True
            except IntegrityError as exc:
                problems.append(str(exc))
    return VerifyReport(p, not problems, layout.signature is not None, signer, layout.encrypted, decrypted,
                        problems)


def _hash_stored(layout: _Layout, fh: io.BufferedReader) -> None:
    hasher = blake3.blake3()
    fh.seek(layout.data_offset)
    remaining = layout.stored_length
    buf = memoryview(bytearray(min(remaining, 8 << 20) or 1))
    while remaining:
        k = fh.readinto(buf[: min(len(buf), remaining)])
        if not k:
            break
        hasher.update(buf[:k])
        remaining -= k
    if not secrets.compare_digest(hasher.digest(), layout.data_digest):
        raise IntegrityError(f"{layout.path}: the tensor data was changed after the bundle was written")


def rotate_key(path: str | os.PathLike[str], old: MasterKey, new: MasterKey) -> bool:
    """Re-wrap an encrypted bundle's data key under ``new`` in place (69 bytes; the tensor
    data, manifest and signature stay as they are). Returns False for unencrypted bundles."""
    p, fh, _ = _open_checked(path)
    with fh:
        layout = _read_layout(p, fh)
        if not layout.encrypted:
            return False
        slot = rewrap(old, new, _key_slot(layout, fh), context=bytes.fromhex(layout.manifest["object_id"]))
    with open(p, "r+b") as wf:
        os.pwrite(wf.fileno(), slot.to_bytes(), layout.keyslot_offset)
        os.fsync(wf.fileno())
    return True
