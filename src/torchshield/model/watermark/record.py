"""The watermark record: everything needed to verify a mark later, with its secret sealed.

Threat model. The record is meant to travel: it sits in the bundle manifest (slot
``watermark``) and as a separate ``mark.json`` the owner keeps. Anyone may read it. It holds
the public facts (method, layers and their shapes, trigger count and input range, threshold,
key id) and one secret: 32 bytes from which the projection matrix and bit string (white-box)
or the trigger inputs and labels (black-box) are expanded. An adversary who learned that
secret could steer the weights away from the mark, or detect trigger queries, so it is only
stored sealed under the owner's master key (AES-256-GCM envelope, ``crypto.envelope.seal``,
bound to the mark id). A SHA-256 commitment to the secret is public, so the owner can later
show a third party that a revealed secret is the one committed to at embedding time.

The public fields are authenticated too (version 2): ``mac`` is an HMAC-SHA256, under a key
expanded from the secret, of every other field. Without it anyone holding the record (a thief
whose copy carries it in its manifest) could raise the threshold to 0.9 and make an unrelated
model read "present", or lower it, or change the bit count, and make the owner's model read
"absent" (found by an outside audit). Keyed by the secret, not the master key, so the record
survives a key rotation that re-wraps the sealed secret. A version-1 record (no ``mac``) is still
read; its public fields are unprotected, and the CLI accepts one only as the owner's own file.

The secret is derived from the master key (``MasterKey.derive("watermark/<method>/<mark id>")``)
so the same key and mark id always give the same mark; verification uses the sealed copy, which
``envelope.rewrap_sealed`` carries over a key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchshield.crypto.keys import MasterKey
from torchshield.errors import FormatError, InputError, IntegrityError, WrongKeyError

__all__ = ["METHODS", "WatermarkRecord", "expand_secret", "new_mark", "read_record", "write_record"]

FORMAT = "torchshield-watermark"
VERSION = 2  # 2: public fields authenticated (``mac``); 1: read, unauthenticated
READABLE_VERSIONS = (1, 2)
METHODS = ("whitebox", "trigger")
_COMMIT_DOMAIN = b"torchshield/watermark-commit/v1"
_EXPAND_DOMAIN = b"torchshield/watermark-expand/v1/"


@dataclass(frozen=True)
class WatermarkRecord:
    """Public description of one mark plus its sealed secret. JSON-able via ``to_dict``."""

    method: str
    mark_id: str
    key_id: str
    commitment: str
    sealed_secret: str
    threshold: float
    layers: dict[str, list[int]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    mac: str = ""  # HMAC of the other fields (version 2); "" on a version-1 record

    @property
    def authenticated(self) -> bool:
        return bool(self.mac)

    def to_dict(self) -> dict[str, Any]:
        doc = {"format": FORMAT, "version": VERSION if self.mac else 1, **asdict(self)}
        if not self.mac:
            del doc["mac"]
        return doc

    def sealed_with(self, secret: bytes, **changes: Any) -> WatermarkRecord:
        """This record with ``changes`` applied and its ``mac`` made for the result (the owner's
        side, who holds the secret: at embedding, or after renaming its layers)."""
        from dataclasses import replace

        changed = replace(self, **changes, mac="")
        return replace(changed, mac=_mac(secret, changed))

    def resealed(self, key: MasterKey, **changes: Any) -> WatermarkRecord:
        """``sealed_with`` for a holder of the master key (the secret is unsealed and checked first)."""
        return self.sealed_with(self.open_secret(key), **changes)

    @classmethod
    def from_dict(cls, doc: Any, *, where: str = "the watermark record") -> WatermarkRecord:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FormatError(f"{where} is not a torchshield watermark record",
                              hint="pass the mark.json written by 'model watermark embed'")
        if doc.get("version") not in READABLE_VERSIONS:
            raise FormatError(f"{where} has version {doc.get('version')!r}; this release reads "
                              f"{', '.join(map(str, READABLE_VERSIONS))}")
        if doc.get("version") == 2 and not isinstance(doc.get("mac"), str):
            raise FormatError(f"{where} is version 2 but has no 'mac' (its public fields cannot be checked)",
                              hint="use the owner's original mark.json")
        try:
            rec = cls(method=str(doc["method"]), mark_id=str(doc["mark_id"]), key_id=str(doc["key_id"]),
                      commitment=str(doc["commitment"]), sealed_secret=str(doc["sealed_secret"]),
                      threshold=float(doc["threshold"]),
                      layers={str(k): [int(d) for d in v] for k, v in dict(doc.get("layers", {})).items()},
                      params=dict(doc.get("params", {})), mac=str(doc.get("mac", "")) if doc.get("version") == 2 else "")
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where} is missing or has a malformed field ({exc})",
                              hint="regenerate it with 'model watermark embed'") from None
        if rec.method not in METHODS:
            raise FormatError(f"{where} names method {rec.method!r}; expected one of {', '.join(METHODS)}")
        if not 0.0 < rec.threshold < 1.0:
            raise FormatError(f"{where} has threshold {rec.threshold}; it must be a p-value in (0, 1)")
        return rec

    def open_secret(self, key: MasterKey) -> bytes:
        """Unseal the mark's secret; a wrong key raises WrongKeyError, a tampered record IntegrityError."""
        from torchshield.crypto.envelope import open_sealed

        if not hmac.compare_digest(self.key_id, key.key_id):
            raise WrongKeyError(f"the watermark record was made with key id {self.key_id}, "
                                f"but the key given has id {key.key_id}",
                                hint="pass the key file used at embedding time")
        try:
            blob = base64.b64decode(self.sealed_secret, validate=True)
        except ValueError:
            raise FormatError("the watermark record's sealed_secret is not base64") from None
        secret = open_sealed(key, blob, context=_seal_context(self.method, self.mark_id))
        if not hmac.compare_digest(_commit(self.mark_id, secret), self.commitment):
            raise IntegrityError("the watermark secret does not match the record's commitment",
                                 hint="the record was altered; use the owner's original mark.json")
        if self.mac and not hmac.compare_digest(_mac(secret, self), self.mac):
            raise IntegrityError("the watermark record's public fields (threshold, layers, parameters) were "
                                 "altered after embedding", hint="use the owner's original mark.json")
        return secret


def _seal_context(method: str, mark_id: str) -> bytes:
    return f"torchshield/watermark/{method}/{mark_id}".encode()


def _mac(secret: bytes, record: WatermarkRecord) -> str:
    """HMAC-SHA256 of every field but ``mac``, as canonical JSON (sorted keys, no spaces)."""
    doc = asdict(record)
    doc.pop("mac")
    body = json.dumps({"format": FORMAT, **doc}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hmac.new(expand_secret(secret, "record-mac", 32), body.encode(), hashlib.sha256).hexdigest()


def _commit(mark_id: str, secret: bytes) -> str:
    return hashlib.sha256(_COMMIT_DOMAIN + mark_id.encode() + b"\0" + secret).hexdigest()


def new_mark(key: MasterKey, method: str, *, threshold: float, layers: dict[str, list[int]] | None = None,
             params: dict[str, Any] | None = None, mark_id: str | None = None) -> tuple[WatermarkRecord, bytes]:
    """Create the secret of a new mark and its record. Returns ``(record, secret)``."""
    from torchshield.crypto.envelope import seal

    if method not in METHODS:
        raise InputError(f"unknown watermark method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"watermark threshold {threshold} is not a p-value in (0, 1)")
    mark_id = mark_id or secrets.token_hex(8)
    secret = key.derive(f"watermark/{method}/{mark_id}")
    sealed = seal(key, secret, context=_seal_context(method, mark_id))
    record = WatermarkRecord(method=method, mark_id=mark_id, key_id=key.key_id,
                             commitment=_commit(mark_id, secret),
                             sealed_secret=base64.b64encode(sealed).decode(), threshold=threshold,
                             layers=dict(layers or {}), params=dict(params or {}))
    return record.sealed_with(secret), secret


def expand_secret(secret: bytes, purpose: str, nbytes: int) -> bytes:
    """Stretch the 32-byte secret into ``nbytes`` of key stream for one purpose (SHAKE-256).

    Why not seed ``torch.Generator``: its seed is 64 bits (weaker than the 256-bit secret), and
    torch does not promise the same random stream across versions or devices, while a mark
    must be re-derivable bit for bit years later. SHAKE-256 is a standard XOF (hashlib) with
    both properties."""
    return hashlib.shake_256(_EXPAND_DOMAIN + purpose.encode() + b"\0" + secret).digest(nbytes)


def read_record(path: str | os.PathLike[str]) -> WatermarkRecord:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"watermark record {p} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormatError(f"watermark record {p} is not JSON",
                          hint="pass the mark.json written by 'model watermark embed'") from None
    return WatermarkRecord.from_dict(doc, where=f"watermark record {p}")


def write_record(path: str | os.PathLike[str], record: WatermarkRecord) -> None:
    from torchshield.atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(record.to_dict(), indent=2) + "\n").encode())
