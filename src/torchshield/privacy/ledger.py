"""A persistent, per-dataset privacy-budget ledger (SQLite by default, PostgreSQL by URL).

Why a ledger. DP guarantees compose: every answer about a data set spends part of one budget,
across processes, users and days. An in-memory accountant forgets on restart; this ledger is
the source of truth that every query charges *before* its answer exists.

Guarantees:
- **Charge, then answer.** ``charge()`` reserves the cost in its own committed transaction
  before any noise is drawn; the answer is attached afterwards. A crash in between leaves a
  ``reserved`` entry that still counts as spent (fail closed): noise may have been seen.
- **No double spend.** The check ``spent + cost <= budget`` and the insert run in one write
  transaction that holds the database's write lock (SQLite ``BEGIN IMMEDIATE``) or the data
  set's row lock (PostgreSQL ``SELECT ... FOR UPDATE``), so concurrent processes serialise.
- **Exact, outward-rounded arithmetic.** Budgets and costs are integers in units of 1e-12
  (epsilon) and 1e-18 (delta): costs are rounded up, budgets down, sums are exact. A tiny
  spend can never vanish in floating point (the openmed ledger bug).
- **Who, when, what.** Each entry records actor, UTC time, the query plan, mechanism, noise
  scale and cost, and is chained to the previous entry of its data set by the shared keyed hash
  chain (:mod:`torchshield.crypto.chain`: HMAC-SHA256 under a key derived from the master key,
  a head per data set), so editing, deleting, inserting or reordering history, or cutting its
  tail, is detected by ``verify()`` against anyone who can write the database but does not hold
  the master key. (Older ledgers chained with plain SHA-256, which such a writer can simply
  recompute: they are refused on open; :meth:`Ledger.migrate_unkeyed` re-chains one explicitly
  after checking its old chain.)
- **Replay cache.** The same plan on the same data set version returns the stored noisy
  answer at no cost: re-asking must not let anyone average the noise away.

Composition is basic (epsilons and deltas add), which is valid for any mix of mechanisms.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from torchshield.crypto.chain import GENESIS, ChainHead, ChainRow, KeyedChain
from torchshield.crypto.keys import MasterKey
from torchshield.errors import FormatError, InputError, KeyMaterialError, PrivacyBudgetExceeded

__all__ = ["DEFAULT_LEDGER_URL", "Budget", "Charge", "Ledger", "LedgerEntry", "default_ledger_url"]

EPS_UNIT = Decimal("1e-12")
DELTA_UNIT = Decimal("1e-18")
MAX_EPSILON = 1e6  # 1e18 units: budgets, costs and their sum stay inside a signed 64-bit column
DEFAULT_LEDGER_URL = "sqlite:///" + str(Path("~/.torchshield/privacy-ledger.db").expanduser())


def default_ledger_url() -> str:
    import os

    return os.environ.get("TORCHSHIELD_LEDGER", DEFAULT_LEDGER_URL)


def _units(value: float | str | Decimal, unit: Decimal, rounding: str) -> int:
    d = Decimal(str(value))
    if not d.is_finite() or d < 0:
        raise InputError(f"privacy cost must be a finite number >= 0, got {value}")
    if d > Decimal(str(MAX_EPSILON)):
        raise InputError(f"privacy budget or cost {float(d):g} is above the ledger's limit of {MAX_EPSILON:g}",
                         hint="an epsilon that large promises nothing; use a meaningful budget")
    return int((d / unit).to_integral_value(rounding=rounding))


def _from_units(units: int, unit: Decimal) -> float:
    return float(Decimal(units) * unit)


@dataclass(frozen=True)
class Budget:
    epsilon: float
    delta: float
    spent_epsilon: float
    spent_delta: float

    @property
    def remaining_epsilon(self) -> float:
        return max(0.0, self.epsilon - self.spent_epsilon)

    @property
    def remaining_delta(self) -> float:
        return max(0.0, self.delta - self.spent_delta)


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    dataset_id: str
    ts: str
    actor: str
    plan: dict[str, Any]
    mechanism: str
    noise_scale: float
    epsilon: float
    delta: float
    status: str
    answer: Any
    entry_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Charge:
    """A reserved spend; ``commit(answer)`` attaches the released answer to it."""

    ledger: Ledger
    seq: int
    cached: bool = False
    answer: Any = None

    def commit(self, answer: Any) -> None:
        if self.cached:
            return
        self.ledger._commit(self.seq, answer)
        self.answer = answer


def _tables(sa: Any) -> Any:
    md = sa.MetaData()
    sa.Table("privacy_datasets", md,
             sa.Column("dataset_id", sa.String(64), primary_key=True),
             sa.Column("name", sa.String(300), nullable=False, default=""),
             sa.Column("epsilon_units", sa.BigInteger, nullable=False),
             sa.Column("delta_units", sa.BigInteger, nullable=False),
             sa.Column("created_at", sa.String(40), nullable=False),
             sa.Column("created_by", sa.String(200), nullable=False))
    sa.Table("privacy_meta", md,  # one row, rewritten on open: proves the ledger takes writes
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("opened_at", sa.String(40), nullable=False))
    sa.Table("privacy_ledger", md,
             sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("dataset_id", sa.String(64), sa.ForeignKey("privacy_datasets.dataset_id"), nullable=False,
                       index=True),
             sa.Column("ts", sa.String(40), nullable=False),
             sa.Column("actor", sa.String(200), nullable=False),
             sa.Column("plan", sa.Text, nullable=False),
             sa.Column("plan_hash", sa.String(64), nullable=False, index=True),
             sa.Column("mechanism", sa.String(40), nullable=False),
             sa.Column("noise_scale", sa.Float, nullable=False),
             sa.Column("epsilon_units", sa.BigInteger, nullable=False),
             sa.Column("delta_units", sa.BigInteger, nullable=False),
             sa.Column("status", sa.String(16), nullable=False),  # reserved | committed
             sa.Column("answer", sa.Text, nullable=True),
             sa.Column("prev_hash", sa.String(64), nullable=False),  # the keyed chain's previous MAC
             sa.Column("entry_hash", sa.String(64), nullable=False))  # this entry's MAC
    sa.Table("privacy_chain_heads", md,  # per data set: the last entry's position and MAC
             sa.Column("dataset_id", sa.String(64), sa.ForeignKey("privacy_datasets.dataset_id"), primary_key=True),
             sa.Column("seq", sa.BigInteger, nullable=False),
             sa.Column("mac", sa.String(64), nullable=False))
    return md


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_CHAINED = ("dataset_id", "ts", "actor", "plan", "mechanism", "noise_scale", "epsilon_units", "delta_units")
CHAIN_PURPOSE = "privacy/ledger-chain"


def _entry_body(n: int, row: Any) -> str:
    """The chained bytes of a data set's ``n``-th entry (its position bound in)."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    return _canonical({**{k: get(k) for k in _CHAINED}, "n": n})


def _legacy_entry_hash(prev: str, row: Any) -> str:
    """The unkeyed SHA-256 link of ledgers written before the keyed chain (read by migration only)."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    return hashlib.sha256((prev + _canonical({k: get(k) for k in _CHAINED})).encode()).hexdigest()


def _ledger_key(key: Any) -> MasterKey:
    """The master key the chain is keyed under: a :class:`MasterKey` resolved by the caller (the CLI
    resolves ``--key-file`` or the environment once); the ledger itself never looks anywhere."""
    if not isinstance(key, MasterKey):
        raise KeyMaterialError("the privacy ledger chains its history under a key derived from the master key",
                               hint="pass key=MasterKey (the CLI: --key-file, or TORCHSHIELD_KEY_FILE / "
                                    "TORCHSHIELD_KEY)")
    return key


class Ledger:
    """Open (and create) the ledger at ``url``; see the module docstring for its guarantees."""

    def __init__(self, url: str | None = None, *, key: MasterKey | None = None) -> None:
        import sqlalchemy as sa

        self.url = url or default_ledger_url()
        self._chain = KeyedChain(_ledger_key(key), CHAIN_PURPOSE)
        self._sa = sa
        try:
            parsed = sa.engine.make_url(self.url)
        except Exception:  # noqa: BLE001
            raise InputError(f"ledger: not a database URL: {self.url.split('@')[-1]!r}",
                             hint="use sqlite:///ledger.db or postgresql+psycopg://user@host/db") from None
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine = self._make_engine()
        self.md = _tables(sa)
        self.datasets, self.entries = self.md.tables["privacy_datasets"], self.md.tables["privacy_ledger"]
        self.heads = self.md.tables["privacy_chain_heads"]
        try:
            with self._write() as conn:
                self._refuse_unkeyed(conn)
                self.md.create_all(conn)
                meta = self.md.tables["privacy_meta"]
                if conn.execute(sa.update(meta).where(meta.c.id == 1).values(opened_at=_now())).rowcount == 0:
                    conn.execute(sa.insert(meta).values(id=1, opened_at=_now()))
        except sa.exc.SQLAlchemyError as exc:
            raise self._db_error(exc) from None

    def _refuse_unkeyed(self, conn: Any) -> None:
        """A ledger written before the keyed chain (entries, but no chain heads) is refused: its
        SHA-256 chain proves nothing against whoever can write the database."""
        names = set(self._sa.inspect(conn).get_table_names())
        if "privacy_ledger" in names and "privacy_chain_heads" not in names and conn.execute(
                self._sa.select(self._sa.func.count()).select_from(self.entries)).scalar_one():
            shown = self.url.split("@")[-1]
            raise FormatError(f"ledger {shown} has an unkeyed (plain SHA-256) hash chain from an older torchshield",
                              hint="re-chain it once under the master key: python -c \"from torchshield.crypto.keys "
                                   "import read_key_file; from torchshield.privacy.ledger import Ledger; Ledger."
                                   "migrate_unkeyed('URL', key=read_key_file('KEY_FILE'))\" (checks the old chain "
                                   "first)")

    @classmethod
    def migrate_unkeyed(cls, url: str, *, key: MasterKey | None = None) -> int:
        """Re-chain a ledger written with the old unkeyed SHA-256 chain under the keyed chain,
        after checking that the old chain is intact (FormatError naming the first bad entry if
        not: history that may have been rewritten is not blessed with a MAC). Returns the number
        of entries re-chained. Run it once, where the old ledger is known to be untouched."""
        import sqlalchemy as sa

        chain = KeyedChain(_ledger_key(key), CHAIN_PURPOSE)
        md = _tables(sa)
        entries, heads = md.tables["privacy_ledger"], md.tables["privacy_chain_heads"]
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                if "privacy_chain_heads" in set(sa.inspect(conn).get_table_names()):
                    return 0  # keyed already
                rows = conn.execute(sa.select(entries).order_by(entries.c.seq)).all()
                by_set: dict[str, list[Any]] = {}
                for r in rows:
                    by_set.setdefault(r.dataset_id, []).append(r)
                for dataset_id, chain_rows in by_set.items():
                    prev = GENESIS
                    for r in chain_rows:
                        if r.prev_hash != prev or r.entry_hash != _legacy_entry_hash(prev, r):
                            raise FormatError(f"ledger entry {r.seq} (data set {dataset_id[:12]}) does not match "
                                              "its old hash chain: refusing to re-chain edited history")
                        prev = r.entry_hash
                md.create_all(conn)
                n_total = 0
                for dataset_id, chain_rows in by_set.items():
                    mac = GENESIS
                    for n, r in enumerate(chain_rows, 1):
                        new = chain.mac(mac, _entry_body(n, r))
                        conn.execute(sa.update(entries).where(entries.c.seq == r.seq)
                                     .values(prev_hash=mac, entry_hash=new))
                        mac = new
                    conn.execute(sa.insert(heads).values(dataset_id=dataset_id, seq=len(chain_rows), mac=mac))
                    n_total += len(chain_rows)
                for (dataset_id,) in conn.execute(sa.select(md.tables["privacy_datasets"].c.dataset_id)).all():
                    if dataset_id not in by_set:
                        conn.execute(sa.insert(heads).values(dataset_id=dataset_id, seq=0, mac=GENESIS))
            return n_total
        finally:
            engine.dispose()

    def _make_engine(self) -> Any:
        sa = self._sa
        if not self.is_sqlite:
            return sa.create_engine(self.url, pool_pre_ping=True)
        engine = sa.create_engine(self.url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN IMMEDIATE ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a charge must survive a power cut too
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock before reading the spend

        return engine

    def _db_error(self, exc: Exception) -> InputError:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        return InputError(f"ledger {self.url.split('@')[-1]}: cannot write ({reason})",
                          hint="check that the ledger file/database exists, is writable and not locked")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except self._sa.exc.OperationalError as exc:
            raise self._db_error(exc) from None

    def close(self) -> None:
        self.engine.dispose()

    # -- budgets ---------------------------------------------------------------------------
    def register(self, dataset_id: str, *, epsilon: float, delta: float = 0.0, name: str = "",
                 actor: str = "") -> Budget:
        """Give ``dataset_id`` its lifetime budget; a second registration must name the same budget."""
        sa = self._sa
        if not epsilon > 0 or not 0 <= delta < 1:
            raise InputError(f"budget must have epsilon > 0 and 0 <= delta < 1, got ({epsilon}, {delta})")
        eps_u, delta_u = _units(epsilon, EPS_UNIT, ROUND_FLOOR), _units(delta, DELTA_UNIT, ROUND_FLOOR)
        try:
            self._register_once(dataset_id, eps_u, delta_u, name, actor)
        except sa.exc.IntegrityError:
            # PostgreSQL: another process inserted the same new data set between our read and our
            # insert (no table lock there, unlike SQLite's BEGIN IMMEDIATE); its row now exists
            self._register_once(dataset_id, eps_u, delta_u, name, actor)
        return self.budget(dataset_id)

    def _register_once(self, dataset_id: str, eps_u: int, delta_u: int, name: str, actor: str) -> None:
        sa = self._sa
        with self._write() as conn:
            row = self._dataset_row(conn, dataset_id)
            if row is None:
                conn.execute(sa.insert(self.datasets).values(
                    dataset_id=dataset_id, name=name, epsilon_units=eps_u, delta_units=delta_u,
                    created_at=_now(), created_by=actor))
                conn.execute(sa.insert(self.heads).values(dataset_id=dataset_id, seq=0, mac=GENESIS))
            elif (row.epsilon_units, row.delta_units) != (eps_u, delta_u):
                raise InputError(f"data set {dataset_id[:12]} already has budget epsilon="
                                 f"{_from_units(row.epsilon_units, EPS_UNIT):g}, delta="
                                 f"{_from_units(row.delta_units, DELTA_UNIT):g}",
                                 hint="a lifetime budget is set once; omit the budget to use it")

    def _dataset_row(self, conn: Any, dataset_id: str) -> Any:
        sa = self._sa
        return conn.execute(sa.select(self.datasets).where(self.datasets.c.dataset_id == dataset_id)).first()

    def is_registered(self, dataset_id: str) -> bool:
        sa = self._sa
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.datasets.c.dataset_id)
                                .where(self.datasets.c.dataset_id == dataset_id)).first() is not None

    def _spent_units(self, conn: Any, dataset_id: str) -> tuple[int, int]:
        sa = self._sa
        e = self.entries
        row = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(e.c.epsilon_units), 0),
                                     sa.func.coalesce(sa.func.sum(e.c.delta_units), 0))
                           .where(e.c.dataset_id == dataset_id)).one()
        return int(row[0]), int(row[1])

    def budget(self, dataset_id: str) -> Budget:
        sa = self._sa
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.datasets).where(self.datasets.c.dataset_id == dataset_id)).first()
            if row is None:
                raise InputError(f"data set {dataset_id[:12]} has no budget in this ledger",
                                 hint="register it first (give a budget with the first query)")
            se, sd = self._spent_units(conn, dataset_id)
        return Budget(_from_units(row.epsilon_units, EPS_UNIT), _from_units(row.delta_units, DELTA_UNIT),
                      _from_units(se, EPS_UNIT), _from_units(sd, DELTA_UNIT))

    # -- spending --------------------------------------------------------------------------
    def charge(self, dataset_id: str, *, plan: dict[str, Any], mechanism: str, noise_scale: float,
               epsilon: float, delta: float = 0.0, actor: str = "") -> Charge:
        """Reserve ``(epsilon, delta)`` for ``plan`` or refuse with PrivacyBudgetExceeded.

        Returns a cached Charge (``cached=True``, ``answer`` set, nothing spent) when the same
        plan was already answered for this data set."""
        sa = self._sa
        if not math.isfinite(noise_scale):
            raise InputError("noise scale must be finite")
        plan_json = _canonical(plan)
        plan_hash = hashlib.sha256(f"{dataset_id}\n{plan_json}".encode()).hexdigest()
        eps_u, delta_u = _units(epsilon, EPS_UNIT, ROUND_CEILING), _units(delta, DELTA_UNIT, ROUND_CEILING)
        e = self.entries
        with self._write() as conn:
            lock = sa.select(self.datasets).where(self.datasets.c.dataset_id == dataset_id)
            row = conn.execute(lock if self.is_sqlite else lock.with_for_update()).first()
            if row is None:
                raise InputError(f"data set {dataset_id[:12]} has no budget in this ledger",
                                 hint="register it first (give a budget with the first query)")
            cached = conn.execute(sa.select(e.c.seq, e.c.answer).where(
                e.c.plan_hash == plan_hash, e.c.status == "committed").limit(1)).first()
            if cached is not None:
                return Charge(self, cached.seq, cached=True, answer=json.loads(cached.answer))
            se, sd = self._spent_units(conn, dataset_id)
            if se + eps_u > row.epsilon_units or sd + delta_u > row.delta_units:
                raise PrivacyBudgetExceeded(
                    f"query refused: it costs epsilon={epsilon:g}, delta={delta:g} but data set "
                    f"{dataset_id[:12]} has epsilon={_from_units(row.epsilon_units - se, EPS_UNIT):g}, "
                    f"delta={_from_units(row.delta_units - sd, DELTA_UNIT):g} left",
                    hint="see 'torchshield privacy ledger show' for what was spent, by whom and when")
            head = self._head(conn, dataset_id)
            if head is None:
                raise FormatError(f"data set {dataset_id[:12]} has lost its chain head: the ledger was tampered with",
                                  hint="run 'torchshield privacy ledger verify' and restore the ledger from a backup")
            values = {"dataset_id": dataset_id, "ts": _now(), "actor": actor, "plan": plan_json,
                      "mechanism": mechanism, "noise_scale": float(noise_scale), "epsilon_units": eps_u,
                      "delta_units": delta_u}
            (row,), new_head = self._chain.extend(head, lambda n: _entry_body(n, values), 1)
            seq = conn.execute(sa.insert(e).values(**values, plan_hash=plan_hash, status="reserved",
                                                   prev_hash=row.prev_mac, entry_hash=row.mac)
                               ).inserted_primary_key[0]
            conn.execute(sa.update(self.heads).where(self.heads.c.dataset_id == dataset_id)
                         .values(seq=new_head.seq, mac=new_head.mac))
        return Charge(self, int(seq))

    def _commit(self, seq: int, answer: Any) -> None:
        sa = self._sa
        with self._write() as conn:
            conn.execute(sa.update(self.entries).where(self.entries.c.seq == seq)
                         .values(status="committed", answer=_canonical(answer)))

    # -- reading ---------------------------------------------------------------------------
    def entries_for(self, dataset_id: str | None = None) -> list[LedgerEntry]:
        sa = self._sa
        e = self.entries
        stmt = sa.select(e).order_by(e.c.seq)
        if dataset_id is not None:
            stmt = stmt.where(e.c.dataset_id == dataset_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [LedgerEntry(r.seq, r.dataset_id, r.ts, r.actor, json.loads(r.plan), r.mechanism, r.noise_scale,
                            _from_units(r.epsilon_units, EPS_UNIT), _from_units(r.delta_units, DELTA_UNIT),
                            r.status, json.loads(r.answer) if r.answer else None, r.entry_hash) for r in rows]

    def dataset_ids(self) -> list[tuple[str, str]]:
        sa = self._sa
        with self.engine.connect() as conn:
            return [(r.dataset_id, r.name) for r in conn.execute(sa.select(self.datasets)).all()]

    def _head(self, conn: Any, dataset_id: str) -> ChainHead | None:
        sa = self._sa
        row = conn.execute(sa.select(self.heads.c.seq, self.heads.c.mac)
                           .where(self.heads.c.dataset_id == dataset_id)).first()
        return None if row is None else ChainHead(int(row.seq), row.mac)

    def verify(self, dataset_id: str) -> list[str]:
        """Problems in the keyed chain of ``dataset_id`` (empty when intact): the first entry that
        was edited, removed, inserted or reordered, or a head that disagrees (a cut tail)."""
        sa = self._sa
        e = self.entries
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(e).where(e.c.dataset_id == dataset_id).order_by(e.c.seq)).all()
            head = self._head(conn, dataset_id)
        chain_rows = [ChainRow(n, _entry_body(n, r), r.prev_hash, r.entry_hash) for n, r in enumerate(rows, 1)]
        report = self._chain.verify(chain_rows, head)
        if report.ok:
            return []
        bad = report.first_bad or 0
        where = f"entry {rows[bad - 1].seq}" if 1 <= bad <= len(rows) else f"data set {dataset_id[:12]}"
        return [f"{where}: hash chain broken: {report.reason}"]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")
