"""Envelope encryption: every object gets its own random data key, wrapped by the master key.

Rotating the master key re-wraps the 32-byte data keys (``rewrap``) and never touches the
payloads they protect. A wrapped key carries the id of the master key that wrapped it, so a
wrong key is reported as such (``WrongKeyError``) rather than as corruption. The ``context``
(an object id) is bound into the wrap as associated data: a key slot copied from another
object does not open this one.

Wire format of a wrapped key (69 bytes)::

    version (1) = 1 | key_id (8) | nonce (12) | AES-256-GCM(data key) with tag (48)

``seal``/``open_sealed`` are the recipe for small secrets (watermark keys, token maps)::

    b"TSS1" | wrapped key (69) | nonce (12) | AES-256-GCM(plaintext) with tag
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from torchshield.crypto.keys import KEY_SIZE, MasterKey
from torchshield.errors import FormatError, IntegrityError, WrongKeyError

__all__ = [
    "WRAPPED_KEY_SIZE",
    "WrappedKey",
    "new_data_key",
    "open_sealed",
    "rewrap",
    "rewrap_sealed",
    "seal",
    "unwrap_data_key",
    "wrap_data_key",
]

_WRAP_VERSION = 1
WRAPPED_KEY_SIZE = 1 + 8 + 12 + KEY_SIZE + 16
_WRAP_AAD = b"torchshield/wrap/v1"
_SEAL_MAGIC = b"TSS1"
_SEAL_AAD = b"torchshield/seal/v1"


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under a master key. Safe to store next to the data."""

    key_id: bytes
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return bytes([_WRAP_VERSION]) + self.key_id + self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> WrappedKey:
        raw = bytes(raw)
        if len(raw) != WRAPPED_KEY_SIZE or raw[0] != _WRAP_VERSION:
            raise FormatError("the wrapped data key is malformed or of an unknown version",
                              hint="the file may be damaged or from a newer torchshield")
        return cls(key_id=raw[1:9], nonce=raw[9:21], ciphertext=raw[21:])

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def _wrapping_aead(master: MasterKey) -> AESGCM:
    return AESGCM(master.derive("envelope/wrap"))


def wrap_data_key(master: MasterKey, data_key: bytes, *, context: bytes) -> WrappedKey:
    nonce = secrets.token_bytes(12)
    kid = master.key_id_bytes
    ct = _wrapping_aead(master).encrypt(nonce, data_key, _WRAP_AAD + kid + context)
    return WrappedKey(key_id=kid, nonce=nonce, ciphertext=ct)


def unwrap_data_key(master: MasterKey, wrapped: WrappedKey, *, context: bytes) -> bytes:
    if not hmac.compare_digest(wrapped.key_id, master.key_id_bytes):
        raise WrongKeyError(
            f"this object was encrypted for key id {wrapped.key_id.hex()}, "
            f"but the key given has id {master.key_id}",
            hint="pass the key it was encrypted with (torchshield keys id KEYFILE shows a key's id)")
    try:
        return _wrapping_aead(master).decrypt(wrapped.nonce, wrapped.ciphertext,
                                              _WRAP_AAD + wrapped.key_id + context)
    except InvalidTag:
        raise IntegrityError("the wrapped data key does not authenticate: it was altered or "
                             "copied from another object") from None


def rewrap(old: MasterKey, new: MasterKey, wrapped: WrappedKey, *, context: bytes) -> WrappedKey:
    """Re-wrap a data key under ``new``; the payload it protects stays as it is."""
    return wrap_data_key(new, unwrap_data_key(old, wrapped, context=context), context=context)


def seal(master: MasterKey, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt a small secret under a fresh data key wrapped by ``master``."""
    data_key = new_data_key()
    wrapped = wrap_data_key(master, data_key, context=context)
    nonce = secrets.token_bytes(12)
    ct = AESGCM(data_key).encrypt(nonce, plaintext, _SEAL_AAD + context)
    return _SEAL_MAGIC + wrapped.to_bytes() + nonce + ct


def _split_sealed(blob: bytes) -> tuple[WrappedKey, bytes, bytes]:
    if len(blob) < 4 + WRAPPED_KEY_SIZE + 12 + 16 or not blob.startswith(_SEAL_MAGIC):
        raise FormatError("this is not a torchshield sealed secret",
                          hint="it may be truncated or from another tool")
    end = 4 + WRAPPED_KEY_SIZE
    return WrappedKey.from_bytes(blob[4:end]), blob[end:end + 12], blob[end + 12:]


def open_sealed(master: MasterKey, blob: bytes, *, context: bytes) -> bytes:
    wrapped, nonce, ct = _split_sealed(blob)
    data_key = unwrap_data_key(master, wrapped, context=context)
    try:
        return AESGCM(data_key).decrypt(nonce, ct, _SEAL_AAD + context)
    except InvalidTag:
        raise IntegrityError("the sealed secret does not authenticate: it was altered") from None


def rewrap_sealed(old: MasterKey, new: MasterKey, blob: bytes, *, context: bytes) -> bytes:
    wrapped, nonce, ct = _split_sealed(blob)
    return _SEAL_MAGIC + rewrap(old, new, wrapped, context=context).to_bytes() + nonce + ct
