"""API keys: random bearer tokens, stored only as a keyed hash.

A token reads ``tsk_<key_id>_<secret>``: ``key_id`` (16 hex characters) names the key in the
database, the audit log and the CLI; ``secret`` is 32 random bytes (256 bits, base64url). The
database keeps ``HMAC-SHA256(MasterKey.derive("serve/api-key-hash"), token)`` and nothing
else about the secret, so a stolen database (or backup) yields no usable key and cannot be
brute-forced offline without the master key. The stored hash is compared with
``hmac.compare_digest``.

Threat model: callers guessing or replaying tokens, a reader of the database, a leaked log.
A token that does not parse fails before any query with the same 401 as an unknown one.

Revocation is effective for the very next request in every worker. Each worker keeps the rows
of the keys it has seen, and uses one only while the database's change stamp
(:meth:`Database.change_stamp`, moved by every key or policy change in any process) is the one
it was read under, and for at most ``KEY_CACHE_TTL_S``; otherwise it reads the row again. The
TTL bounds what a change that bypassed the stamp (a process killed between its commit and the
stamp, an edit by another tool) can leave stale. Where there is no stamp (PostgreSQL), every
request reads its key's row. Expiry is checked against the clock on every request, and the
secret against the stored keyed hash, in constant time, whether the row came from the cache or
the database.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from torchshield.errors import InputError
from torchshield.serve.rbac import GLOBAL, ROLES, grant_rows

if TYPE_CHECKING:
    from torchshield.serve.db_async import NextBatch

__all__ = ["ApiKey", "KeyStore", "MAX_BURST", "MAX_RATE", "NewKey", "parse_duration", "valid_model_name"]

_TOKEN_RE = re.compile(r"tsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_RATE = 1e6  # requests/second a key may be given (finite: a rate of inf is no limit)
MAX_BURST = 1_000_000
KEY_CACHE_TTL_S = 1.0  # longest a worker uses a key's row without reading it again
_KEY_CACHE_MAX = 10_000  # rows kept per worker (only keys that exist get one)


def parse_duration(text: str) -> float:
    """``30d`` -> seconds; units s, m, h, d, w."""
    m = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) and len(text) <= 12 else None
    if not m or int(m.group(1)) <= 0:
        raise InputError(f"expires: {text!r} is not a duration", hint="use e.g. 90m, 12h, 30d or 4w")
    return int(m.group(1)) * _UNITS[m.group(2)]


def valid_model_name(name: str) -> bool:
    return bool(_MODEL_RE.fullmatch(name)) and ".." not in name


@dataclass(frozen=True)
class ApiKey:
    """What the service knows about a key (never its secret)."""

    key_id: str
    name: str
    role: str
    models: tuple[str, ...]
    created_at: float
    created_by: str = ""
    expires_at: float | None = None
    revoked_at: float | None = None
    rate_per_s: float | None = None
    burst: int | None = None

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "role": self.role, "models": list(self.models),
                "created_at": self.created_at, "created_by": self.created_by, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at, "rate_per_s": self.rate_per_s, "burst": self.burst,
                "status": self.status()}


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: ``token`` is shown once and never stored."""

    key: ApiKey
    token: str = field(repr=False)


_KEY_COLUMNS = ("key_id", "name", "role", "models", "created_at", "created_by", "expires_at", "revoked_at",
                "rate_per_s", "burst")


# A key's row, its keyed hash and the policy revision, in one query (by one id or several)
_AUTH_SELECT = (f"SELECT {', '.join('k.' + c for c in _KEY_COLUMNS)}, k.key_hash, r.revision "
                "FROM serve_api_keys k JOIN serve_revision r ON r.id = 1 WHERE ")


def _row_to_key(row: Any) -> ApiKey:
    """An :class:`ApiKey` from a row holding ``_KEY_COLUMNS`` first, in that order."""
    key_id, name, role, models, created_at, created_by, expires_at, revoked_at, rate_per_s, burst = row[:10]
    return ApiKey(key_id=key_id, name=name, role=role, models=tuple(json.loads(models)), created_at=created_at,
                  created_by=created_by or "", expires_at=expires_at, revoked_at=revoked_at,
                  rate_per_s=rate_per_s, burst=burst)


@functools.lru_cache(maxsize=4096)
def _cached_key(row: tuple[Any, ...]) -> ApiKey:
    """:func:`_row_to_key` once per distinct row: a key's row is read again and again (every
    request on PostgreSQL, after each stamp change or TTL on SQLite) and rarely changes (any
    change, revocation included, is a new row value and so a new entry)."""
    return _row_to_key(row)


def _key_id(token: str | None) -> str | None:
    """The key id of a well-formed token; None for anything else (refused before any query)."""
    m = _TOKEN_RE.fullmatch(token) if token else None
    return m.group(1) if m else None


class KeyStore:
    """Create, authenticate, list and revoke API keys in the serving database."""

    def __init__(self, db: Any, master: Any) -> None:
        self._db = db
        self._hash_key = master.derive("serve/api-key-hash")
        self._auth_sql = db.sql(_AUTH_SELECT + "k.key_id = ?")
        # PostgreSQL, on the event loop: the key reads of concurrent requests in one query
        self._reads: NextBatch | None = None
        if db.async_hot is not None:
            from torchshield.serve.db_async import NextBatch

            self._reads = NextBatch(self._read_rows)
            self._auth_many_sql = _AUTH_SELECT + "k.key_id = ANY(%s)"  # PostgreSQL's array parameter
        # key_id -> (change stamp, read at (monotonic), key_hash, ApiKey, policy revision)
        self._rows: dict[str, tuple[int, float, str, ApiKey, int]] = {}
        self.cache_ttl = KEY_CACHE_TTL_S
        # PostgreSQL: rows kept per worker for provisional decisions (authenticate_cached), valid
        # while the newest revision this worker has seen is the one they were read under
        self._pg_rows: dict[str, tuple[Any, float, str, ApiKey, int]] = {}
        self.revision_seen = -1

    def _hash(self, token: str) -> str:
        return hmac.digest(self._hash_key, token.encode(), sha256).hex()  # one-shot: a fifth of hmac.new's cost

    def create(self, *, role: str, models: list[str] | tuple[str, ...] = (GLOBAL,), name: str = "",
               expires_in: float | None = None, created_by: str = "", rate_per_s: float | None = None,
               burst: int | None = None) -> NewKey:
        import sqlalchemy as sa

        if role not in ROLES:
            raise InputError(f"role: unknown role {role!r}", hint=f"choose one of {', '.join(sorted(ROLES))}")
        models = sorted(set(models))
        if not models:  # never read as "every model": that is '*', said explicitly
            raise InputError("models: give at least one model name, or '*' for every model")
        bad = [m for m in models if m != GLOBAL and not valid_model_name(m)]
        if bad or (GLOBAL in models and len(models) > 1):
            raise InputError("models: model names are letters, digits, '.', '_' and '-' (or '*' alone)")
        if rate_per_s is not None and not (isinstance(rate_per_s, (int, float)) and 0 < rate_per_s <= MAX_RATE):
            raise InputError(f"rate_per_s: must be a number of requests per second in (0, {MAX_RATE:g}]")
        if burst is not None and not (type(burst) is int and 1 <= burst <= MAX_BURST):
            raise InputError(f"burst: must be a whole number from 1 to {MAX_BURST}")
        key_id = secrets.token_hex(8)
        token = f"tsk_{key_id}_{base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b'=').decode()}"
        now = time.time()
        key = ApiKey(key_id=key_id, name=name[:200], role=role, models=tuple(models), created_at=now,
                     created_by=created_by, expires_at=None if expires_in is None else now + expires_in,
                     rate_per_s=rate_per_s, burst=burst)
        from casbin_sqlalchemy_adapter.adapter import CasbinRule

        with self._db.writing() as conn:
            conn.execute(sa.insert(self._db.t("api_keys")).values(
                key_id=key_id, name=key.name, role=role, models=json.dumps(list(models)),
                key_hash=self._hash(token), created_at=now, created_by=created_by,
                expires_at=key.expires_at, rate_per_s=rate_per_s, burst=burst))
            conn.execute(sa.insert(CasbinRule.__table__), grant_rows(key_id, role, list(models)))
            self._db.bump_revision(conn)
        return NewKey(key=key, token=token)

    def authenticate(self, token: str | None) -> ApiKey | None:
        """The active key for ``token``, or None (missing, malformed, unknown, expired or revoked)."""
        return self.authenticate_with_revision(token)[0]

    def authenticate_with_revision(self, token: str | None) -> tuple[ApiKey | None, int]:
        """Like :meth:`authenticate`, plus the policy revision read in the same query (-1 if none).

        This runs on every request: the key's row comes from this worker's cache while the
        change stamp has not moved (see the module docstring), else from one indexed query
        through the driver's cursor (:meth:`Database.fetch_one`), not SQLAlchemy Core."""
        key_id = _key_id(token)
        if token is None or key_id is None:  # _key_id gives None for a None token
            return None, -1
        stamp = self._db.change_stamp()  # read before the row: a change after it moves it again
        now = time.monotonic()
        hit = self._rows.get(key_id)
        if hit is None or hit[0] != stamp or now - hit[1] > self.cache_ttl:
            hit = self._remember(key_id, self._db.fetch_one(self._auth_sql, (key_id,)), stamp, now)
        return self._accept(token, hit)

    async def authenticate_async(self, token: str | None) -> tuple[ApiKey | None, int]:
        """:meth:`authenticate_with_revision` on the event loop, for PostgreSQL (see
        :mod:`torchshield.serve.db_async`): there is no change stamp, so the row is read every
        time, in one query with the reads of the other requests waiting at the same moment
        (:class:`~torchshield.serve.db_async.NextBatch`: each read is still sent after its request
        asked, so a revocation committed before is seen)."""
        key_id = _key_id(token)
        if token is None or key_id is None:  # _key_id gives None for a None token
            return None, -1
        if self._reads is None:
            raise RuntimeError("authenticate_async needs the PostgreSQL event-loop database (async_hot)")
        row = await self._reads.submit(key_id)
        return self._accept(token, self._remember(key_id, row, None, 0.0))

    async def authenticate_cached(self, token: str | None, *, fresh: bool = False) -> tuple[ApiKey | None, int, bool]:
        """:meth:`authenticate_async` that may answer from this worker's copy of the key's row:
        ``(key, revision, provisional)``. A provisional answer comes from a row read under
        ``revision``, the newest revision this worker has seen, at most ``cache_ttl`` ago; the
        caller must commit the request's audit record guarded by that revision
        (``AuditWriter.write_async(key_revision=...)``), which writes nothing and raises
        ``KeysChanged`` if any key or policy changed since, so that the request is decided again
        from a fresh row before anything is answered: revocation stays effective for every
        request that arrives after it commits, and a lone request pays one round trip, not two.
        The secret and the expiry are checked on every request, cached row or not. ``fresh``:
        read the row (and keep it) whatever the cache holds."""
        key_id = _key_id(token)
        if token is None or key_id is None:  # _key_id gives None for a None token
            return None, -1, False
        hit = None if fresh else self._pg_rows.get(key_id)
        if hit is not None and hit[4] == self.revision_seen and time.monotonic() - hit[1] <= self.cache_ttl:
            key, revision = self._accept(token, hit)
            return key, revision, True
        if self._reads is None:
            raise RuntimeError("authenticate_cached needs the PostgreSQL event-loop database (async_hot)")
        row = await self._reads.submit(key_id)
        hit = self._remember(key_id, row, None, time.monotonic())
        if hit is None:
            self._pg_rows.pop(key_id, None)
        else:
            self.saw_revision(hit[4])
            if len(self._pg_rows) >= _KEY_CACHE_MAX:
                self._pg_rows.clear()
            self._pg_rows[key_id] = hit
        key, revision = self._accept(token, hit)
        return key, revision, False

    def saw_revision(self, revision: int) -> None:
        """A read or a guarded commit found the keys at ``revision``: rows read under an older
        one are no longer used."""
        if revision > self.revision_seen:
            self.revision_seen = revision

    async def _read_rows(self, key_ids: list[str]) -> list[Any]:
        rows = await self._db.async_hot.fetch_all(self._auth_many_sql, (sorted(set(key_ids)),))
        by_id = {row[0]: row for row in rows}
        return [by_id.get(k) for k in key_ids]

    def _remember(self, key_id: str, row: Any, stamp: int | None, now: float) -> tuple | None:
        """The cache entry for a row just read (kept if there is a stamp), None if no such key."""
        if row is None:
            self._rows.pop(key_id, None)
            return None
        key_hash, key, revision = row[10], _cached_key(tuple(row[:10])), int(row[11])
        if stamp is not None:
            if len(self._rows) >= _KEY_CACHE_MAX:
                self._rows.clear()
            self._rows[key_id] = (stamp, now, key_hash, key, revision)
        return (stamp, now, key_hash, key, revision)

    def _accept(self, token: str, hit: tuple | None) -> tuple[ApiKey | None, int]:
        """The key if ``token``'s secret matches the stored keyed hash and the key is active now."""
        if hit is None or not hmac.compare_digest(hit[2], self._hash(token)):
            return None, -1
        key = hit[3]
        return (key if key.status() == "active" else None), hit[4]

    def _row(self, key_id: str) -> Any:
        import sqlalchemy as sa

        keys = self._db.t("api_keys")
        with self._db.reading() as c:
            return c.execute(sa.select(*(keys.c[n] for n in _KEY_COLUMNS)).where(keys.c.key_id == key_id)).first()

    def get(self, key_id: str) -> ApiKey | None:
        row = self._row(key_id) if re.fullmatch(r"[0-9a-f]{16}", key_id) else None
        return None if row is None else _row_to_key(row)

    def list(self, *, model: str | None = None) -> list[ApiKey]:
        import sqlalchemy as sa

        t = self._db.t("api_keys")
        with self._db.reading() as conn:
            rows = conn.execute(sa.select(*(t.c[n] for n in _KEY_COLUMNS)).order_by(t.c.created_at)).all()
        keys = [_row_to_key(r) for r in rows]
        return [k for k in keys if model is None or model in k.models]

    def revoke(self, key_id: str) -> bool:
        """Mark the key revoked and drop its grants; False if no such active key."""
        import sqlalchemy as sa
        from casbin_sqlalchemy_adapter.adapter import CasbinRule

        t = self._db.t("api_keys")
        rules = CasbinRule.__table__
        with self._db.writing() as conn:
            n = conn.execute(sa.update(t).where(t.c.key_id == key_id, t.c.revoked_at.is_(None))
                             .values(revoked_at=time.time())).rowcount
            conn.execute(sa.delete(rules).where(rules.c.ptype == "g", rules.c.v0 == key_id))
            self._db.bump_revision(conn)
        return bool(n)

    def count(self) -> int:
        import sqlalchemy as sa

        with self._db.reading() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self._db.t("api_keys"))).scalar_one())
