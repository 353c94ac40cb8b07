"""Every cryptographic operation of the store, in one place.

Key hierarchy (restic's, with one data key per object version on top)::

    master key (user's key file)
      ├── wraps the repository keys (one sealed "key slot" per master key in ``config``)
      │     ├── chunk key   AES-256-GCM key shared by all chunks of the vault
      │     ├── id key      HMAC-SHA256 key: chunk id = HMAC(id key, plaintext chunk)
      │     └── chunker seed  64-bit seed of the FastCDC gear table
      └── wraps one fresh data key per snapshot (object version); it encrypts that snapshot's
          manifest: object name, tag, metadata, size and the list of chunk ids.

Why chunks share a key: deduplication must recognise the same chunk across objects, so a chunk
has to be encrypted the same way whichever object brings it. Per-object keys protect what is
per-object (the manifest). The trade-off: whoever holds the chunk key and a chunk id can read that
chunk whatever object it belongs to; per-object keys alone would give no dedup across objects.

Threat model: an attacker who can read, change, delete, reorder or copy files of the vault (a
stolen disk, a backup bucket) but has no master key. They learn the number and sizes of chunks
and snapshots, and when files were written; names, tags, metadata, contents and which chunks
belong to which object stay secret. Chunk ids are keyed (HMAC), so a guessed plaintext cannot be
confirmed from the ids, and the chunker's gear table is keyed by a secret seed, so chunk
boundaries do not fingerprint a known file as plainly as an unkeyed chunker would (a 64-bit
XOR seed, like fastcdc-rs', weakens but does not remove the size side channel; restic and borg
have the same class of leak). Any change to a file is detected by an AEAD tag: chunk
ciphertexts are bound to their id, manifests to their vault and snapshot id, key slots to
their vault.

Wire formats::

    chunk file      b"TSC1" | chunk id (32) | nonce (12) | AES-256-GCM(chunk) with tag (16)
                    AAD = "torchshield/store/chunk/v1" | vault id | chunk id
    snapshot file   envelope.seal(master, manifest JSON, context="torchshield/store/snapshot/v1" |
                    vault id | snapshot id)      (its own data key, wrapped by the master key)
    key slot        envelope.seal(master, repository keys JSON, context="torchshield/store/keys/v1" | vault id)

Random 96-bit nonces under the shared chunk key stay far below the 2^32-message bound for
AES-GCM (2^32 chunks of ~1 MiB is 4 PiB).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from torchshield.crypto.envelope import WRAPPED_KEY_SIZE, WrappedKey, open_sealed, rewrap_sealed, seal
from torchshield.crypto.keys import MasterKey
from torchshield.errors import FormatError, IntegrityError

__all__ = [
    "CHUNK_MAGIC",
    "ChunkProblem",
    "RepoKeys",
    "chunk_id",
    "inspect_chunk",
    "open_chunk",
    "open_key_slot",
    "open_manifest",
    "rewrap_blob",
    "seal_chunk",
    "seal_key_slot",
    "seal_manifest",
    "sealed_key_id",
]

CHUNK_MAGIC = b"TSC1"
_ID_SIZE = 32
_HEADER = len(CHUNK_MAGIC) + _ID_SIZE + 12
_CHUNK_AAD = b"torchshield/store/chunk/v1"
_SNAPSHOT_CTX = b"torchshield/store/snapshot/v1"
_KEYS_CTX = b"torchshield/store/keys/v1"
_SEAL_MAGIC_LEN = 4  # envelope.seal's b"TSS1"


@dataclass(frozen=True)
class RepoKeys:
    """The repository keys; ``repr`` never shows them."""

    vault_id: bytes
    chunk_key: bytes = field(repr=False)
    id_key: bytes = field(repr=False)
    chunker_seed: int = field(repr=False)
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aead", AESGCM(self.chunk_key))

    @classmethod
    def generate(cls, vault_id: bytes) -> RepoKeys:
        # seed in [1, 2**63): 0 would mean "unkeyed default gear table" to pyfastcdc
        return cls(vault_id, secrets.token_bytes(32), secrets.token_bytes(32),
                   secrets.randbelow(2**63 - 1) + 1)

    def to_json(self) -> bytes:
        enc = base64.b64encode
        return json.dumps({"chunk_key": enc(self.chunk_key).decode(), "id_key": enc(self.id_key).decode(),
                           "chunker_seed": self.chunker_seed}).encode()


def chunk_id(keys: RepoKeys, data: bytes | memoryview) -> bytes:
    """HMAC-SHA256 of the plaintext under the id key: equal chunks get equal ids, and the id
    reveals nothing about the chunk to anyone without the key."""
    return hmac.digest(keys.id_key, data, sha256)


def _chunk_aad(keys: RepoKeys, cid: bytes) -> bytes:
    return _CHUNK_AAD + keys.vault_id + cid


def seal_chunk(keys: RepoKeys, cid: bytes, data: bytes | memoryview) -> bytes:
    nonce = secrets.token_bytes(12)
    return CHUNK_MAGIC + cid + nonce + keys._aead.encrypt(nonce, data, _chunk_aad(keys, cid))


class ChunkProblem(IntegrityError):
    """A chunk file failed a check; ``kind`` is "damaged", "swapped" or "truncated"."""

    def __init__(self, kind: str, cid: bytes, detail: str) -> None:
        self.kind = kind
        self.cid = cid
        super().__init__(f"chunk {cid.hex()[:16]} is {kind}: {detail}",
                         hint="run `torchshield store verify` and restore the vault from a backup")


def open_chunk(keys: RepoKeys, cid: bytes, blob: bytes, *, check_id: bool = False) -> bytes:
    """Decrypt a chunk file stored under id ``cid``; raise ChunkProblem if it is not that chunk."""
    if len(blob) < _HEADER + 16 or not blob.startswith(CHUNK_MAGIC):
        raise ChunkProblem("truncated", cid, "the file is too short or has no chunk header")
    stored = blob[4:4 + _ID_SIZE]
    nonce = blob[4 + _ID_SIZE:_HEADER]
    try:
        if not hmac.compare_digest(stored, cid):
            keys._aead.decrypt(nonce, blob[_HEADER:], _chunk_aad(keys, stored))
            raise ChunkProblem("swapped", cid, f"its file holds the valid chunk {stored.hex()[:16]} instead")
        plain = keys._aead.decrypt(nonce, blob[_HEADER:], _chunk_aad(keys, cid))
    except InvalidTag:
        raise ChunkProblem("damaged", cid, "its authentication tag does not match (bytes were changed)") from None
    if check_id and not hmac.compare_digest(chunk_id(keys, plain), cid):
        raise ChunkProblem("damaged", cid, "its content does not hash to its id")
    return plain


def inspect_chunk(keys: RepoKeys, cid: bytes, blob: bytes, length: int) -> str | None:
    """Full check used by verify: None if good, else a one-line reason (never raises for bad data)."""
    try:
        plain = open_chunk(keys, cid, blob, check_id=True)
    except ChunkProblem as exc:
        return f"{exc.kind}: {exc.message.split(': ', 1)[1]}"
    if len(plain) != length:
        return f"damaged: {len(plain)} bytes where the manifest says {length}"
    return None


def seal_manifest(master: MasterKey, vault_id: bytes, snap_id: str, doc: dict[str, Any]) -> bytes:
    return seal(master, json.dumps(doc, separators=(",", ":")).encode(),
                context=_SNAPSHOT_CTX + vault_id + snap_id.encode())


def open_manifest(master: MasterKey, vault_id: bytes, snap_id: str, blob: bytes) -> dict[str, Any]:
    plain = open_sealed(master, blob, context=_SNAPSHOT_CTX + vault_id + snap_id.encode())
    try:
        doc = json.loads(plain)
    except ValueError:
        raise FormatError(f"snapshot {snap_id[:8]} holds no valid manifest") from None
    if not isinstance(doc, dict):
        raise FormatError(f"snapshot {snap_id[:8]} holds no valid manifest")
    return doc


def seal_key_slot(master: MasterKey, keys: RepoKeys) -> bytes:
    return seal(master, keys.to_json(), context=_KEYS_CTX + keys.vault_id)


def open_key_slot(master: MasterKey, vault_id: bytes, blob: bytes) -> RepoKeys:
    doc = json.loads(open_sealed(master, blob, context=_KEYS_CTX + vault_id))
    dec = base64.b64decode
    return RepoKeys(vault_id, dec(doc["chunk_key"]), dec(doc["id_key"]), int(doc["chunker_seed"]))


def sealed_key_id(blob: bytes) -> str:
    """Hex id of the master key that wrapped a sealed blob (snapshot or key slot)."""
    return WrappedKey.from_bytes(blob[_SEAL_MAGIC_LEN:_SEAL_MAGIC_LEN + WRAPPED_KEY_SIZE]).key_id_hex


def rewrap_blob(old: MasterKey, new: MasterKey, blob: bytes, *, vault_id: bytes, snap_id: str | None) -> bytes:
    """Re-wrap the data key of a snapshot (or, with ``snap_id=None``, a key slot) under ``new``;
    the ciphertext it protects is not touched."""
    ctx = _KEYS_CTX + vault_id if snap_id is None else _SNAPSHOT_CTX + vault_id + snap_id.encode()
    return rewrap_sealed(old, new, blob, context=ctx)
