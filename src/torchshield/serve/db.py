"""The serving database: API keys, Casbin policies, the audit chain and shared counters.

One SQLAlchemy URL picks the backend: SQLite (the default, a file next to the service, WAL
journal) or PostgreSQL (``postgresql+psycopg://user@host/db``). Everything that several
uvicorn workers must agree on lives here, never only in a process: key state (so a revocation
is seen by the next request in every worker), the policy revision counter (workers reload
Casbin policies when it moves), the audit chain head, and optionally the rate-limit buckets.
On SQLite the lock file next to the database also carries a change stamp
(:meth:`Database.change_stamp`) that lets workers cache key rows between changes.

The two statements a request runs (the key lookup, when its cached row is stale, and the audit
append) go through the driver's own cursor (:meth:`Database.raw_reading`/:meth:`raw_writing`;
on SQLite a connection held per thread, on PostgreSQL one from a pool, or for coroutines the
asyncio pool of :mod:`torchshield.serve.db_async`) rather than SQLAlchemy Core: measured on SQLite, Core costs 120-210 us per key lookup and
~550 us per audit append where the DB-API cursor takes 8-30 us and ~40 us, which is most of
what security added to a request's latency. Everything else keeps SQLAlchemy.

Why two engines for SQLite: a deferred SQLite transaction that reads and then writes fails
with ``SQLITE_BUSY`` when another process committed in between, and ``busy_timeout`` does not
help with that upgrade. Writers therefore start with ``BEGIN IMMEDIATE`` (they queue on the
write lock instead), while readers keep plain deferred transactions that never block in WAL
mode. PostgreSQL serialises the chain with ``SELECT ... FOR UPDATE`` on the head row instead.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

from torchshield.errors import InputError
from torchshield.serve.db_errors import lost_connection

__all__ = ["Database", "WriteBusy", "open_database", "redact_url"]

WAL_RESTART_BYTES = 64 << 20  # WAL size past which the checkpointer makes sure it starts over


class WriteBusy(Exception):
    """A non-waiting write found the write lock taken (see :meth:`Database.raw_writing`)."""


def _tables() -> Any:
    import sqlalchemy as sa

    md = sa.MetaData()
    sa.Table(
        "serve_api_keys", md,
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, default=""),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("models", sa.Text, nullable=False),  # JSON list of model names, or ["*"]
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False, default=""),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("rate_per_s", sa.Float, nullable=True),
        sa.Column("burst", sa.Integer, nullable=True),
    )
    sa.Table(
        "serve_revision", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "serve_audit_head", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
    )
    sa.Table(
        "serve_audit_log", md,
        # INTEGER on SQLite makes seq the rowid: no separate index, one page less per commit
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("body", sa.Text, nullable=False),  # canonical JSON of the record
        sa.Column("prev_mac", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
    )
    sa.Table(
        "serve_rate_buckets", md,
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    return md


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL that does not parse is shown without its userinfo
        return url.split("@")[-1]


@dataclass
class Database:
    """Engines and tables of one serving database; build it with :func:`open_database`."""

    url: str
    read_engine: Any
    write_engine: Any
    tables: Any

    @property
    def is_sqlite(self) -> bool:
        return self.read_engine.dialect.name == "sqlite"

    def t(self, name: str) -> Any:
        return self.tables.tables[f"serve_{name}"]

    @contextmanager
    def reading(self) -> Iterator[Any]:
        with self.read_engine.connect() as conn:
            yield conn

    lock_path: str | None = None
    # PostgreSQL: an engine for the per-request statements (the key read, the audit append) in
    # autocommit mode and without a ping per checkout: a read is one round trip instead of four
    # (ping, BEGIN, SELECT, ROLLBACK: the key check 1.2 ms -> 0.3 ms measured against a local
    # server); a connection lost meanwhile is dropped on the error it raises. None on SQLite.
    hot_engine: Any = None
    # PostgreSQL: the same two statements for coroutines, on the event loop (see db_async). None on SQLite.
    async_hot: Any = None
    _thread_lock: Any = field(default_factory=threading.Lock, repr=False)
    _lock_file: Any = field(default=None, repr=False)
    _lock_pid: int = field(default=0, repr=False)
    _checkpointer: Any = field(default=None, repr=False)
    _held: Any = field(default_factory=threading.local, repr=False)  # per-thread SQLite connections
    _held_all: list = field(default_factory=list, repr=False)
    _held_lock: Any = field(default_factory=threading.Lock, repr=False)
    _stamp_map: Any = field(default=None, repr=False)  # the lock file's first 8 bytes, mapped
    _changed: Any = field(default_factory=threading.local, repr=False)  # bump_revision in this transaction

    @contextmanager
    def writing(self) -> Iterator[Any]:
        """A write transaction that holds the database's write lock from its first statement (SQLite)."""
        with self._file_lock():
            self._changed.flag = False
            with self.write_engine.begin() as conn:
                yield conn
            if self._changed.flag:  # committed: now tell the other processes (still under the lock)
                self._signal_change()

    def change_stamp(self) -> int | None:
        """A number that moves whenever keys or policies change, readable without a query; None
        where there is none (PostgreSQL, in-memory SQLite): callers then read the database.

        On SQLite it is a counter in the first 8 bytes of the lock file, mapped into memory:
        :meth:`bump_revision` increments it right after its transaction commits, under the
        write lock, in whichever process made the change (the CLI included). Reading it costs a
        memory read where a query costs a SQLite read transaction and a release of the GIL, which
        on the request path measured several times the query's own ~10 us."""
        mm = self._stamp_map
        if mm is None or mm[1] != os.getpid():
            if self.lock_path is None or fcntl is None:
                return None
            try:
                mm = self._map_stamp()
            except OSError:
                return None  # no usable lock file (read-only folder...): callers query instead
        return int.from_bytes(mm[0][:8], "little")

    def _map_stamp(self) -> tuple[Any, int]:
        fd = self._lock_fd()
        if os.fstat(fd).st_size < 8:
            os.ftruncate(fd, 8)  # only ever grows the file: a counter already there stays
        mm = (mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE), os.getpid())
        self._stamp_map = mm
        return mm

    def _signal_change(self) -> None:
        if self.change_stamp() is None:
            return
        mm = self._stamp_map[0]
        mm[:8] = ((int.from_bytes(mm[:8], "little") + 1) % (1 << 64)).to_bytes(8, "little")

    @contextmanager
    def _file_lock(self, *, wait: bool = True) -> Iterator[None]:
        """Queue SQLite writers of all processes on an OS file lock.

        SQLite's own busy handler polls with sleeps of up to 100 ms, so two uvicorn workers
        contending for the write lock lose most of their time asleep; ``flock`` wakes the next
        writer the moment the lock is released. PostgreSQL needs none of this. With
        ``wait=False`` raises :class:`WriteBusy` instead of waiting (an event loop must not)."""
        if self.lock_path is None or fcntl is None:
            yield
            return
        if not self._thread_lock.acquire(blocking=wait):
            raise WriteBusy
        try:
            fd = self._lock_fd()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise WriteBusy from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _lock_fd(self) -> int:
        """The lock file, opened once per process (a forked child opens its own: flock locks
        belong to the open file, which a fork would share)."""
        pid = os.getpid()
        if self.lock_path is None:  # the callers only lock when there is a lock file
            raise RuntimeError("the database has no lock file")
        if self._lock_file is None or self._lock_pid != pid:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_file, self._lock_pid = os.fdopen(fd, "r+b"), pid  # noqa: SIM115 - lives with self
        return self._lock_file.fileno()

    def sql(self, text: str) -> str:
        """``text`` written with ``?`` placeholders, in the driver's parameter style."""
        return text if self.is_sqlite else text.replace("?", "%s")

    @contextmanager
    def _raw(self, engine: Any) -> Iterator[Any]:
        """A DB-API connection: on SQLite one per thread, held for the thread's life (a pool
        checkout and return cost more than the query); elsewhere from the hot engine's pool."""
        if not self.is_sqlite:
            rc = self.hot_engine.raw_connection()
            try:
                yield rc
            except BaseException:
                if getattr(rc.driver_connection, "broken", False):
                    rc.invalidate()  # lost (server restarted): the pool opens a new one next time
                raise
            finally:
                rc.close()  # back to the pool
            return
        yield self._held_connection(engine)

    def _held_connection(self, engine: Any) -> Any:
        """This thread's own SQLite connection of ``engine``, opened on first use."""
        held = self._held.__dict__
        rc = held.get(id(engine))
        if rc is None:
            rc = engine.raw_connection()
            rc.detach()  # ours now, outside the pool's size limit
            held[id(engine)] = rc
            with self._held_lock:
                self._held_all.append(rc)
        return rc

    def fetch_one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """The first row of a read query, or None: :meth:`raw_reading` without the context
        managers on SQLite, for the one query every request makes (its key check)."""
        if not self.is_sqlite:
            for attempt in (1, 2):  # a read is safe to repeat on a fresh connection
                try:
                    with self.raw_reading() as cur:
                        cur.execute(sql, params)
                        return cur.fetchone()
                except Exception as exc:
                    if attempt == 2 or not lost_connection(exc):
                        raise  # only a lost connection (dropped from the pool by _raw) is retried
        cur = self._held_connection(self.read_engine).cursor()
        try:
            cur.execute(sql, params)
            return cur.fetchone()
        finally:
            cur.close()  # ends SQLite's read transaction

    @contextmanager
    def raw_reading(self) -> Iterator[Any]:
        """A DB-API cursor for reads (the fast path; see the module docstring). Closing the cursor
        ends SQLite's read transaction."""
        with self._raw(self.read_engine) as rc:
            cur = rc.cursor()
            try:
                yield cur
            finally:
                cur.close()

    @contextmanager
    def raw_writing(self, *, wait: bool = True) -> Iterator[Any]:
        """A DB-API cursor in a write transaction, committed on exit (the fast path).

        Same locking as :meth:`writing`: the file lock and ``BEGIN IMMEDIATE`` on SQLite; on
        PostgreSQL the driver opens the transaction and callers lock rows with ``FOR UPDATE``.
        ``wait=False`` (SQLite): :class:`WriteBusy` if another writer holds the lock."""
        if not self.is_sqlite:
            # The hot engine's autocommit connection, in an explicit transaction: no ping and no
            # ROLLBACK on return around it (append: 2.8 -> 1.2 ms measured against a local
            # server; psycopg's pipeline mode measured slower here, so it is not used).
            with self._raw(self.write_engine) as rc:
                conn = rc.driver_connection
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            return
        with self._file_lock(wait=wait), self._raw(self.write_engine) as rc:
            cur = rc.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
            except BaseException:
                rc.rollback()
                raise
            else:
                rc.commit()
            finally:
                cur.close()

    def revision(self, conn: Any | None = None) -> int:
        import sqlalchemy as sa

        stmt = sa.select(self.t("revision").c.revision).where(self.t("revision").c.id == 1)
        if conn is not None:
            return int(conn.execute(stmt).scalar_one())
        with self.reading() as c:
            return int(c.execute(stmt).scalar_one())

    def bump_revision(self, conn: Any) -> None:
        """Tell every worker that keys or policies changed (call inside the changing transaction)."""
        import sqlalchemy as sa

        rev = self.t("revision")
        conn.execute(sa.update(rev).where(rev.c.id == 1).values(revision=rev.c.revision + 1))
        self._changed.flag = True  # writing() moves change_stamp() once this commits

    def start_checkpointer(self, interval: float = 1.0, restart_bytes: int = WAL_RESTART_BYTES) -> None:
        """Move SQLite's WAL checkpoints off the request path (no-op on other databases).

        By default the commit that grows the WAL past 1000 pages runs the checkpoint itself:
        copying the WAL back into the database file with two fsyncs, 6-70 ms measured here,
        landing on every ~300th request. Here the service's connections turn automatic
        checkpoints off and a thread runs a PASSIVE checkpoint every ``interval`` seconds
        instead; PASSIVE never waits for readers or writers, and SQLite releases the GIL while
        it works. Durability is unchanged: a committed transaction is in the WAL either way.

        Racing steady commits, though, a PASSIVE checkpoint never copies the last frames, so
        the WAL is never started over and grows without bound (7 MB per 2,000 requests here).
        When it passes ``restart_bytes`` the thread checkpoints once more under the write lock:
        no commit lands meanwhile, every frame is copied, and the next writer starts the WAL
        over. Writers wait for that one (its fsyncs: ~30 ms here), so it is rare: about every 3
        s at full load with the default 64 MiB, never under light load."""
        import sqlalchemy as sa

        if not self.is_sqlite or self._checkpointer is not None:
            return
        for engine in {self.read_engine, self.write_engine}:
            sa.event.listen(engine, "connect", _no_autocheckpoint)
            engine.dispose()  # pooled connections reconnect with the pragma
        with self._held_lock:
            for rc in self._held_all:
                _no_autocheckpoint(rc.driver_connection, None)
        stop = threading.Event()

        def checkpoint() -> int:
            """One PASSIVE checkpoint; returns the WAL's size in bytes before it."""
            with self.raw_reading() as cur:
                cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
                frames = cur.fetchone()[1]
                cur.execute("PRAGMA page_size")
                return max(frames, 0) * cur.fetchone()[0]

        def run() -> None:
            while not stop.wait(interval):
                try:
                    if checkpoint() > restart_bytes:
                        with self._file_lock():
                            checkpoint()
                except Exception:  # noqa: BLE001, S112 - a checkpoint that cannot run now runs next time
                    continue

        thread = threading.Thread(target=run, name="torchshield-wal-checkpoint", daemon=True)
        thread.start()
        self._checkpointer = (stop, thread)

    def dispose(self) -> None:
        if self._checkpointer is not None:
            stop, thread = self._checkpointer
            stop.set()
            thread.join(timeout=10)
            self._checkpointer = None
        with self._held_lock:
            held, self._held_all = self._held_all, []
        for rc in held:
            rc.close()
        if self._stamp_map is not None:
            self._stamp_map[0].close()
            self._stamp_map = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()
        if self.hot_engine is not None:
            self.hot_engine.dispose()


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_engine(url: str, *, immediate: bool) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")  # persistent; readers never block the writer
        # NORMAL in WAL mode: a committed transaction survives a killed process (not a power cut).
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_database(url: str, *, create: bool = True) -> Database:
    """Connect to ``url``, create missing tables and check that the database takes writes
    (``create=False``: only check that it holds a serving database, for read-only use).

    A database that is down, missing or read-only fails here with an :class:`InputError` naming
    the (password-free) URL, so the service never starts half-working."""
    import sqlalchemy as sa

    shown = redact_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"--db: not a database URL: {shown!r}",
                         hint="use sqlite:///shield.db or postgresql+psycopg://user@host/db") from exc
    try:
        if parsed.get_backend_name() == "sqlite":
            read, write = _sqlite_engine(url, immediate=False), _sqlite_engine(url, immediate=True)
        else:
            read = write = sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)
            hot = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_size=8, max_overflow=16)
    except (ImportError, sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
        raise InputError(f"--db: cannot use {shown}: {type(exc).__name__}",
                         hint="for PostgreSQL install psycopg[binary] and use postgresql+psycopg://") from exc
    if parsed.get_backend_name() == "sqlite":
        db = Database(url=url, read_engine=read, write_engine=write, tables=_tables())
    else:
        from torchshield.serve.db_async import AsyncHotPath

        db = Database(url=url, read_engine=read, write_engine=write, tables=_tables(), hot_engine=hot,
                      async_hot=AsyncHotPath(url) if AsyncHotPath.available() else None)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:" \
            and not parsed.database.startswith("file:"):
        db.lock_path = parsed.database + ".lock"
    try:
        if create:
            from torchshield.serve.rbac import create_policy_table

            db.tables.create_all(write)
            create_policy_table(write)
            with db.writing() as conn:  # a real write: proves the database is writable now
                _ensure_row(conn, db.t("revision"), {"id": 1, "revision": 0})
                _ensure_row(conn, db.t("audit_head"), {"id": 1, "seq": 0, "mac": "0" * 64})
                db.bump_revision(conn)
        else:  # readers (audit verify/export) work on read-only copies too
            db.revision()
    except sa.exc.SQLAlchemyError as exc:
        db.dispose()
        reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        raise InputError(f"--db: database {shown} is unreachable or read-only: {reason}",
                         hint="check the URL, that the server runs, and that this user may write") from exc
    return db


def _ensure_row(conn: Any, table: Any, values: dict[str, Any]) -> None:
    import sqlalchemy as sa

    if conn.execute(sa.select(table.c.id).where(table.c.id == values["id"])).first() is None:
        conn.execute(sa.insert(table).values(**values))
