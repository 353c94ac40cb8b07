"""De-identification operators: small classes, one per technique, registered by name.

Technique names follow GB/T 37964-2019 Annex A / ISO/IEC 20889 (each operator's ``technique``),
so reports can say what was done in the standard's terms.

Keyed operators (hash, encrypt, pseudonymize, date_shift) take purpose-bound subkeys from the
master key (HKDF labels ``data/...``). Threat model: whoever holds the output but not the key
cannot reverse hashes, tokens or pseudonyms by brute force, even though the inputs (IDs, phone
numbers) have small spaces: that is why unkeyed hashing is refused. Deterministic encryption
(AES-SIV) reveals equality of values, by design (joins); nothing else."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torchshield.errors import InputError, KeyMaterialError, WrongKeyError, about

__all__ = [
    "OPERATORS",
    "TOKEN_PREFIX",
    "Cell",
    "KeyedContext",
    "Operator",
    "TOKEN_PATTERN",
    "decrypt_token",
    "make_operator",
    "operator_spec",
]

TOKEN_PREFIX = "tsenc1."
TOKEN_PATTERN = re.compile(r"tsenc1\.[A-Za-z0-9_-]{22,}")
_SIV_AD = b"torchshield/data/encrypt/v1"


@dataclass
class KeyedContext:
    """Subkeys for keyed operators, derived once per run from the master key (or absent)."""

    master: Any | None = None  # torchshield.crypto.keys.MasterKey
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False)

    def subkey(self, label: str, length: int = 32, *, operator: str) -> bytes:
        if self.master is None:
            raise KeyMaterialError(
                f"operator '{operator}' needs a key",
                hint="pass --key-file, or set TORCHSHIELD_KEY / TORCHSHIELD_KEY_FILE "
                     "(create one with: torchshield keys init --out shield.key)")
        k = f"{label}/{length}"
        if k not in self._cache:
            self._cache[k] = self.master.derive(label, length)
        return self._cache[k]


@dataclass
class Cell:
    """What an operator sees besides the value: its entity type and the row's person key."""

    entity: str | None = None
    person: str | None = None


class Operator(ABC):
    """Transforms one value. ``options`` are validated in the constructor (bad option -> InputError
    naming it); ``needs_key`` operators get their subkeys from the KeyedContext."""

    name: ClassVar[str]
    technique: ClassVar[str]
    needs_key: ClassVar[bool] = False
    reversible: ClassVar[bool] = False
    allowed: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - self.allowed
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(sorted(unknown))} for operator '{self.name}'",
                             hint=f"allowed: {', '.join(sorted(self.allowed)) or 'none'}")
        self.options = options

    @abstractmethod
    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        """The replacement for ``value``; None means the value is removed (empty cell)."""

    def _int(self, key: str, default: int, *, minimum: int = 0) -> int:
        v = self.options.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise InputError(f"option '{key}' of operator '{self.name}' must be an integer >= {minimum}")
        return v


class Keep(Operator):
    name, technique = "keep", "none"

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        return value


class Replace(Operator):
    """``<TYPE>`` (default) or a fixed ``value``."""

    name, technique = "replace", "masking (suppression)"
    allowed = frozenset({"value"})

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        fixed = self.options.get("value")
        return str(fixed) if fixed is not None else f"<{cell.entity or 'PII'}>"


class Mask(Operator):
    """Keep the first/last n characters, mask the rest; separators (space, -) stay."""

    name, technique = "mask", "masking"
    allowed = frozenset({"keep_first", "keep_last", "char"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.first = self._int("keep_first", 0)
        self.last = self._int("keep_last", 0)
        self.char = str(self.options.get("char", "*"))
        if len(self.char) != 1:
            raise InputError("option 'char' of operator 'mask' must be one character")

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        idx = [i for i, c in enumerate(value) if c not in " -"]
        keep = set(idx[:self.first]) | (set(idx[-self.last:]) if self.last else set())
        if len(keep) >= len(idx) and idx:
            keep = set(idx[:max(0, len(idx) // 3)])  # never return a value fully unmasked
        return "".join(c if (i in keep or c in " -") else self.char for i, c in enumerate(value))


class Truncate(Operator):
    name, technique = "truncate", "masking (truncation)"
    allowed = frozenset({"length", "from_end"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.length = self._int("length", 3)

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        return value[-self.length:] if self.options.get("from_end") else value[:self.length]


def _canon(value: str) -> bytes:
    return unicodedata.normalize("NFKC", value).strip().encode("utf-8")


class Hash(Operator):
    """Keyed HMAC-SHA256, hex, stable across runs and tables for the same key (joins).

    Unkeyed hashing is not offered: an ID or phone number space is ~10^11 or less, so a
    plain hash is reversed by enumeration in minutes."""

    name, technique, needs_key = "hash", "pseudonymization (keyed hash)", True
    allowed = frozenset({"length", "prefix"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.length = self._int("length", 16, minimum=8)

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        k = keys.subkey("data/keyed-hash", operator=self.name)
        digest = hmac.new(k, _canon(value), hashlib.sha256).hexdigest()[:self.length]
        return f"{self.options.get('prefix', '')}{digest}"


class Encrypt(Operator):
    """Deterministic AES-SIV (RFC 5297) token ``tsenc1.<base64url>``, reversible with the key
    (``torchshield data unmask``). Equal inputs give equal tokens, so joins still work."""

    name, technique, needs_key, reversible = "encrypt", "deterministic encryption", True, True

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        from cryptography.hazmat.primitives.ciphers.aead import AESSIV

        k = keys.subkey("data/deterministic-encryption", 64, operator=self.name)
        ct = AESSIV(k).encrypt(value.encode("utf-8"), [_SIV_AD])
        return TOKEN_PREFIX + base64.urlsafe_b64encode(ct).rstrip(b"=").decode("ascii")


def decrypt_token(token: str, keys: KeyedContext) -> str:
    """Reverse one ``encrypt`` token; a token made under another key raises WrongKeyError."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    if not token.startswith(TOKEN_PREFIX):
        raise InputError("not a torchshield encryption token")
    body = token[len(TOKEN_PREFIX):]
    try:
        ct = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raise InputError("malformed encryption token") from None
    k = keys.subkey("data/deterministic-encryption", 64, operator="unmask")
    try:
        return AESSIV(k).decrypt(ct, [_SIV_AD]).decode("utf-8")
    except InvalidTag:
        raise WrongKeyError("a token does not decrypt under this key",
                            hint="use the key the data was masked with") from None


class Pseudonymize(Operator):
    """A realistic surrogate in the same script and format, chosen by a keyed hash of the value,
    so the same person gets the same pseudonym in every row and run (see ``surrogates``)."""

    name, technique, needs_key = "pseudonymize", "pseudonymization (cryptographically derived)", True
    allowed = frozenset({"keep_birth_year", "type"})

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        from torchshield.data.anonymize.surrogates import surrogate

        k = keys.subkey("data/pseudonym", operator=self.name)
        seed = hmac.new(k, (cell.entity or "").encode() + b"\x00" + _canon(value), hashlib.sha256).digest()
        return surrogate(self.options.get("type") or cell.entity, value, seed,
                         keep_birth_year=bool(self.options.get("keep_birth_year", False)))


_DATE_RE = re.compile(r"(\d{4})[-/.年](\d{1,2})(?:[-/.月](\d{1,2})日?)?")


class Generalize(Operator):
    """Coarser values: numbers to ranges (``width``), dates to month or year (``level``),
    codes to a prefix (``keep``: ID -> region code, zip -> first digits)."""

    name, technique = "generalize", "generalization"
    allowed = frozenset({"width", "level", "keep", "fill"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        level = self.options.get("level")
        if level is not None and level not in ("month", "year"):
            raise InputError("option 'level' of operator 'generalize' must be 'month' or 'year'")
        if "width" in self.options:
            self._int("width", 10, minimum=1)
        if "keep" in self.options:
            self._int("keep", 3, minimum=0)

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        v = value.strip()
        if "keep" in self.options:
            n = self.options["keep"]
            return v[:n] + str(self.options.get("fill", "*")) * max(0, len(v) - n)
        if "width" in self.options:
            try:
                x = float(v)
            except ValueError:
                return "*"
            w = self.options["width"]
            lo = int(x // w * w)
            return f"{lo}-{lo + w - 1}"
        m = _DATE_RE.search(v)
        if m is None:
            return "*"
        return m.group(1) if self.options.get("level") == "year" else f"{m.group(1)}-{int(m.group(2)):02d}"


class DateShift(Operator):
    """Shift dates by a per-person offset in [-max_days, max_days] (keyed hash of the person key),
    so intervals within one person's record survive and dates no longer match other sources."""

    name, technique, needs_key = "date_shift", "randomization (date shifting)", True
    allowed = frozenset({"max_days"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.max_days = self._int("max_days", 30, minimum=1)

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        m = _DATE_RE.search(value)
        if m is None or m.group(3) is None:
            return value
        try:
            d = _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return value
        k = keys.subkey("data/date-shift", operator=self.name)
        who = _canon(cell.person if cell.person is not None else value)
        h = int.from_bytes(hmac.new(k, who, hashlib.sha256).digest()[:8], "big")
        offset = h % (2 * self.max_days + 1) - self.max_days
        shifted = (d + _dt.timedelta(days=offset)).isoformat()
        return value[:m.start()] + shifted + value[m.end():]


class Suppress(Operator):
    """Remove the value (``drop: true`` on a column removes the column)."""

    name, technique = "suppress", "suppression"
    allowed = frozenset({"drop"})

    def apply(self, value: str, cell: Cell, keys: KeyedContext) -> str | None:
        return None


OPERATORS: dict[str, type[Operator]] = {
    op.name: op for op in (Keep, Replace, Mask, Truncate, Hash, Encrypt, Pseudonymize, Generalize, DateShift,
                           Suppress)
}


def operator_spec(spec: Any, *, where: str = "policy") -> dict[str, Any]:
    """``"hash"`` or ``{"operator": "hash", ...}`` as a fresh dict (policy YAML allows both)."""
    if isinstance(spec, str):
        return {"operator": spec}
    if not isinstance(spec, Mapping):
        raise InputError(f"{where}: expected an operator name or a mapping with an 'operator' field")
    return dict(spec)


def make_operator(spec: Mapping[str, Any] | str, *, where: str = "policy") -> Operator:
    """Build an operator from ``{"operator": name, **options}`` (or a bare name)."""
    opts = operator_spec(spec, where=where)
    name = opts.pop("operator", None)
    if name not in OPERATORS:
        raise InputError(f"{where}.operator: unknown operator {name!r}",
                         hint=f"known: {', '.join(sorted(OPERATORS))}")
    with about(where):
        return OPERATORS[name](**opts)
