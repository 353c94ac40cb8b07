"""Every key torchshield derives, in one table.

A subkey is ``HKDF-SHA256(master, info="torchshield/derive/v1/" + label)`` (``MasterKey.derive``).
Two uses of one label would share a key, so each label has exactly one purpose, written here, and
``MasterKey.derive`` refuses a label that is not in this table: adding a use of the master key means
adding a row here, where a reviewer sees all of them at once. ``{name}`` parts are per-object values
(an id or nonce), which give each object its own independent key.

The two HKDF infos that do not go through ``derive`` are here too: the key id (public, 8 bytes) and the
chunk keys of the streaming AEAD (derived from a per-object data key and salt, not the master key).
"""

from __future__ import annotations

import re

__all__ = ["DERIVATIONS", "DERIVE_INFO_PREFIX", "KEY_ID_INFO", "STREAM_CHUNK_INFO", "check_label"]

KEY_ID_INFO = b"torchshield/key-id/v1"
DERIVE_INFO_PREFIX = b"torchshield/derive/v1/"
STREAM_CHUNK_INFO = b"torchshield/stream/v1"

DERIVATIONS: dict[str, str] = {
    "envelope/wrap": "AES-256-GCM key that wraps each object's data key (crypto/envelope.py)",
    "data/keyed-hash": "HMAC key of the keyed-hash operator (data/anonymize)",
    "data/deterministic-encryption": "AES-SIV key of the reversible deterministic-encryption operator",
    "data/pseudonym": "HMAC key choosing consistent pseudonyms",
    "data/date-shift": "HMAC key choosing each person's date shift",
    "serve/api-key-hash": "HMAC key under which API-key tokens are stored (serve/access/keys.py)",
    "serve/audit-chain": "HMAC key of the audit log's hash chain (serve/audit.py)",
    "serve/audit-digest": "HMAC key of request-body digests kept in audit records",
    "privacy/ledger-chain": "HMAC key of the privacy budget ledger's hash chain (privacy/ledger.py)",
    "watermark/{method}/{mark_id}": "the secret of one watermark (trigger inputs, white-box projection)",
    "obfuscate/{nonce}": "seed of one obfuscation's hidden-unit permutations",
    "obfuscate/names/{nonce}": "HMAC key of one obfuscation's tensor-name scrambling",
}

_PART = r"[A-Za-z0-9_.:-]+"
_PATTERNS = [re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", _PART, re.escape(label)) + "$") for label in DERIVATIONS]


def check_label(label: str) -> None:
    """Raise ``ValueError`` (a programming error, not user input) for a label not in the table."""
    if not any(p.match(label) for p in _PATTERNS):
        raise ValueError(f"key derivation label {label!r} is not registered in torchshield.crypto.labels")
