"""The per-request vault: which placeholder or pseudonym the gateway issued for which original.

Threat model. The vault is the only place where a request's identifiers are kept next to their
stand-ins, so:

* it lives in the gateway's process, never in the model's input (the model sees placeholders
  only, so no prompt can make it print the vault) and never in a log or audit record;
* it is bound to one request id and one caller key id; a placeholder carries an 8-letter tag
  drawn for this vault and chosen to occur nowhere in the caller's text, and only exact tokens
  this vault issued are mapped back: a ``<PERSON_1>`` a caller types, or a placeholder of another
  request that a model repeats, maps to nothing;
* originals are kept as ``bytearray`` and overwritten by :meth:`RequestVault.wipe` when the
  request ends (best effort: the caller's ``str`` and the detector's copies are not ours to wipe);
* kept beyond a request only sealed: :meth:`seal` encrypts it with ``crypto.envelope.seal`` under
  the master key with the conversation id and the caller as associated data, so a sealed vault
  copied to another conversation or caller does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass, field

from torchshield.crypto.envelope import open_sealed, seal
from torchshield.crypto.keys import MasterKey
from torchshield.errors import FormatError

__all__ = ["PLACEHOLDER_LOOKALIKE", "RequestVault", "vault_context"]

_TAG_ALPHABET = "abcdefghijklmnopqrstuvwxyz"  # letters only: no digit run for a number recogniser to join
_TAG_LEN = 8
_VAULT_MAGIC = b"TSGV1"
# What a caller might type to pose as a placeholder: <PERSON_1>, <PERSON_1_abcdefgh>, [EMAIL_2] ...
PLACEHOLDER_LOOKALIKE = re.compile(r"[<\[{(]\s*[A-Z][A-Z0-9_]*_\d+(?:_[A-Za-z]+)?\s*[>\]})]")
_KINDS = {0: "placeholder", 1: "pseudonym"}
# An issued placeholder as a model may echo it: brackets kept, changed to [], or dropped.
_ISSUED = re.compile(rf"[<\[]?\s*([A-Z][A-Z0-9_]*_\d+_([a-z]{{{_TAG_LEN}}}))(?![A-Za-z])\s*[>\]]?")


def vault_context(conversation: str, caller: str) -> bytes:
    """Associated data binding a sealed vault to its conversation (or request) and caller."""
    return b"torchshield/gateway-vault/v1\x00" + conversation.encode() + b"\x00" + caller.encode()


@dataclass
class _Entry:
    entity: str
    kind: str
    original: bytearray = field(repr=False)


class RequestVault:
    """Stand-in -> original for one request (or one caller's conversation)."""

    def __init__(self, *, request_id: str, caller: str) -> None:
        self.request_id = request_id
        self.caller = caller
        self._entries: dict[str, _Entry] = {}
        self._by_original: dict[bytes, str] = {}  # keyed digest of (entity, original) -> stand-in
        self._index_key = bytearray(secrets.token_bytes(32))
        self._next: dict[str, int] = {}
        self._tags: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.wiped = False

    # ---- issuing -------------------------------------------------------------------------
    def new_tag(self, avoid: str) -> str:
        """A fresh tag for this turn's placeholders that occurs nowhere in ``avoid`` (the caller's
        text, lower-cased) nor among earlier tags: a typed lookalike can then never equal a token."""
        low = avoid.lower()
        while True:
            tag = "".join(secrets.choice(_TAG_ALPHABET) for _ in range(_TAG_LEN))
            if tag not in low and tag not in self._tags:
                self._tags.append(tag)
                return tag

    def _digest(self, entity: str, original: str) -> bytes:
        return hmac.new(bytes(self._index_key), entity.encode() + b"\x00" + original.encode(), hashlib.sha256).digest()

    def placeholder(self, entity: str, original: str, tag: str) -> str:
        """The placeholder for ``original`` (the same one each time it recurs in this vault)."""
        d = self._digest(entity, original)
        known = self._by_original.get(d)
        if known is not None and self._entries[known].kind == "placeholder":
            return known
        n = self._next.get(entity, 0) + 1
        self._next[entity] = n
        token = f"<{entity}_{n}_{tag}>"
        self._entries[token] = _Entry(entity, "placeholder", bytearray(original.encode()))
        self._by_original[d] = token
        return token

    def pseudonym(self, entity: str, original: str, pseudonym: str) -> None:
        """Remember that ``pseudonym`` stands for ``original`` in this request."""
        if not pseudonym or pseudonym == original or pseudonym in self._entries:
            return
        self._entries[pseudonym] = _Entry(entity, "pseudonym", bytearray(original.encode()))
        self._by_original[self._digest(entity, original)] = pseudonym
        self._pattern = None

    # ---- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def issued(self) -> list[str]:
        """The stand-ins (not the originals): what may appear in the model's answer on our behalf."""
        return list(self._entries)

    def _pseudonym_pattern(self) -> re.Pattern[str] | None:
        if self._pattern is None:
            pseudo = sorted((t for t, e in self._entries.items() if e.kind == "pseudonym"), key=len, reverse=True)
            if not pseudo:
                return None
            self._pattern = re.compile("|".join(map(re.escape, pseudo)))
        return self._pattern

    def _matches(self, text: str) -> list[tuple[int, int, _Entry]]:
        """(start, end, entry) of every stand-in this vault issued, in ``text``, left to right."""
        if not self._entries:
            return []
        found: list[tuple[int, int, _Entry]] = []
        if self._tags and "_" in text:
            for m in _ISSUED.finditer(text):
                if m.group(2) in self._tags:
                    entry = self._entries.get(f"<{m.group(1)}>")
                    if entry is not None:
                        found.append((m.start(), m.end(), entry))
        pat = self._pseudonym_pattern()
        if pat is not None:
            for m in pat.finditer(text):
                if not any(s < m.end() and m.start() < e for s, e, _ in found):
                    found.append((m.start(), m.end(), self._entries[m.group(0)]))
            found.sort(key=lambda x: x[0])
        return found

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where this vault's stand-ins occur in ``text``."""
        return [(s, e) for s, e, _ in self._matches(text)]

    def reidentify(self, text: str) -> tuple[str, dict[str, int]]:
        """``text`` with every stand-in this vault issued replaced by its original; counts by type."""
        if self.wiped:
            raise RuntimeError("the vault of this request was already wiped")
        counts: dict[str, int] = {}
        out: list[str] = []
        pos = 0
        for start, end, entry in self._matches(text):
            out += [text[pos:start], entry.original.decode()]
            counts[entry.entity] = counts.get(entry.entity, 0) + 1
            pos = end
        out.append(text[pos:])
        return "".join(out), counts

    # ---- ending --------------------------------------------------------------------------
    def wipe(self) -> None:
        """Overwrite every original and the index key, and drop all references."""
        for entry in self._entries.values():
            entry.original[:] = b"\x00" * len(entry.original)
        self._index_key[:] = b"\x00" * len(self._index_key)
        self._entries.clear()
        self._by_original.clear()
        self._pattern = None
        self.wiped = True

    def seal(self, master: MasterKey, *, conversation: str) -> bytes:
        """The vault encrypted under ``master``, bound to ``conversation`` and this caller."""
        buf = bytearray(_VAULT_MAGIC)
        for tag in self._tags:
            buf += b"T" + struct.pack(">H", len(tag)) + tag.encode()
        for entity, n in self._next.items():
            buf += b"N" + struct.pack(">H", len(entity)) + entity.encode() + struct.pack(">I", n)
        for token, e in self._entries.items():
            kind = 0 if e.kind == "placeholder" else 1
            parts = (token.encode(), e.entity.encode(), bytes(e.original))
            buf += b"E" + bytes([kind]) + b"".join(struct.pack(">I", len(p)) + p for p in parts)
        try:
            return seal(master, bytes(buf), context=vault_context(conversation, self.caller))
        finally:
            buf[:] = b"\x00" * len(buf)

    @classmethod
    def open(cls, master: MasterKey, blob: bytes, *, conversation: str, request_id: str,
             caller: str) -> RequestVault:
        """Open a sealed vault for the next turn (IntegrityError/WrongKeyError if not ours)."""
        raw = bytearray(open_sealed(master, blob, context=vault_context(conversation, caller)))
        vault = cls(request_id=request_id, caller=caller)
        try:
            vault._load(raw)
        except (IndexError, struct.error, UnicodeDecodeError):
            raise FormatError("a sealed gateway vault is malformed") from None
        finally:
            raw[:] = b"\x00" * len(raw)
        return vault

    def _load(self, raw: bytearray) -> None:
        if not raw.startswith(_VAULT_MAGIC):
            raise FormatError("a sealed gateway vault is malformed")
        i = len(_VAULT_MAGIC)
        while i < len(raw):
            rec = raw[i:i + 1]
            i += 1
            if rec == b"T" or rec == b"N":
                (ln,) = struct.unpack_from(">H", raw, i)
                name = raw[i + 2:i + 2 + ln].decode()
                i += 2 + ln
                if rec == b"T":
                    self._tags.append(name)
                else:
                    (self._next[name],) = struct.unpack_from(">I", raw, i)
                    i += 4
            elif rec == b"E":
                kind = _KINDS[raw[i]]
                i += 1
                parts = []
                for _ in range(3):
                    (ln,) = struct.unpack_from(">I", raw, i)
                    parts.append(bytearray(raw[i + 4:i + 4 + ln]))
                    i += 4 + ln
                token, entity = parts[0].decode(), parts[1].decode()
                self._entries[token] = _Entry(entity, kind, parts[2])
                self._by_original[self._digest(entity, parts[2].decode())] = token
            else:
                raise FormatError("a sealed gateway vault is malformed")
