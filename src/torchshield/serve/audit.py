"""A tamper-evident audit log: one SQL row per decision, on the shared keyed hash chain.

Record ``n`` stores ``mac_n = HMAC(K, mac_{n-1} || body_n)`` (:class:`~torchshield.crypto.chain.KeyedChain`)
where ``body_n`` is the canonical JSON of the record (sorted keys, no spaces, its own sequence
number and time inside) and ``K = MasterKey.derive("serve/audit-chain")``. A head row keeps the
last ``(seq, mac)``. Editing a record breaks its MAC, deleting one breaks the next record's link,
inserting one needs K, reordering changes the sequence numbers bound into the MACs, a row
numbered outside ``1..head`` is reported, and cutting the tail or deleting or editing the head
disagrees with the head. :func:`AuditLog.verify` walks the chain and names the first bad record;
reads (:meth:`AuditLog.records`) serve only records numbered ``1..head``.

Threat model: someone with write access to the database but not to the master key edits the
trail after the fact. Not covered: that person rewinding the head *and* truncating the tail to
an earlier consistent state; export the head (``audit verify --json``) to another system to
anchor it. Records hold key ids, model names, decisions, status codes and keyed digests of
request bodies, never tokens or inputs.

Writes: records are appended in one transaction per batch under the chain lock (``BEGIN
IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), so several workers and
processes interleave safely. :class:`AuditWriter` batches concurrent requests into one commit
(group commit) and each request waits for its commit before its response is sent.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from torchshield.crypto.chain import ChainHead, ChainRow, KeyedChain
from torchshield.serve.db import WriteBusy
from torchshield.serve.db_async import settle_all

__all__ = ["AuditLog", "AuditWriter", "KeysChanged", "VerifyReport", "canonical_json"]

COMMIT_TIMEOUT_S = 60.0  # longest a request waits for its record's commit before it fails (503)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_ROWS_JSON = json.JSONEncoder(separators=(",", ":"))  # rows for json_to_recordset (ASCII: exact round trip)


def canonical_json(obj: Any) -> str:
    # One encoder for every call: json.dumps builds a new one per call when given options (~40%
    # of the time here, and every request's record passes through this).
    return _CANONICAL.encode(obj)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class KeysChanged(Exception):
    """A guarded append found the keys and policies changed since its records were decided
    (``revision``: the database's now): nothing was written; decide again from fresh rows."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"keys changed (revision {revision})")
        self.revision = revision


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of a chain walk; ``first_bad`` is the sequence number of the first bad record."""

    ok: bool
    records: int
    head_seq: int
    head_mac: str
    first_bad: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "head_seq": self.head_seq, "head_mac": self.head_mac,
                "first_bad": self.first_bad, "reason": self.reason}


class AuditLog:
    """Append to, read and verify the audit chain in the serving database."""

    def __init__(self, db: Any, master: Any) -> None:
        self._db = db
        self._keyed = KeyedChain(master, "serve/audit-chain")
        self._digest_key = master.derive("serve/audit-digest")
        # PostgreSQL, event loop: the head as this process's last commit left it, and whether the
        # one-statement append is worth trying (see append_many_async); commits by kind
        self._head_hint: tuple[int, str] | None = None
        self._hint_trusted = False
        self.commits: Counter = Counter()

    def digest(self, data: bytes) -> str:
        """A keyed digest of request content: links records to inputs without storing them."""
        return hmac.digest(self._digest_key, data, sha256).hex()[:32]

    def _mac(self, prev: str, body: str) -> str:
        return self._keyed.mac(prev, body)

    _HEAD = "SELECT seq, mac FROM serve_audit_head WHERE id = 1"
    _INSERT = "INSERT INTO serve_audit_log (seq, ts, body, prev_mac, mac) VALUES (?, ?, ?, ?, ?)"
    _MOVE_HEAD = "UPDATE serve_audit_head SET seq = ?, mac = ? WHERE id = 1"

    def _chain(self, seq: int, mac: str, records: list[dict[str, Any]]) -> tuple[list[tuple], list[int], int, str]:
        """Rows for ``records`` after the head ``(seq, mac)``: (rows, their seqs, new seq, new mac)."""
        rows, seqs = [], []
        ts = _now_iso()  # committed together, stamped together
        for rec in records:
            seq += 1
            body = canonical_json({**rec, "seq": seq, "ts": ts})
            new_mac = self._mac(mac, body)
            rows.append((seq, ts, body, mac, new_mac))
            mac = new_mac
            seqs.append(seq)
        return rows, seqs, seq, mac

    def append_many(self, records: list[dict[str, Any]], *, wait: bool = True) -> list[int]:
        """Append ``records`` (JSON-able dicts without ``seq``/``ts``) atomically; returns their seqs.

        Every request ends here, so this uses the driver's cursor (:meth:`Database.raw_writing`):
        a quarter of the latency SQLAlchemy Core adds on SQLite. ``wait=False``: raise
        :class:`~torchshield.serve.db.WriteBusy` rather than wait for another writer (SQLite)."""
        db = self._db
        with db.raw_writing(wait=wait) as cur:
            cur.execute(db.sql(self._HEAD + ("" if db.is_sqlite else " FOR UPDATE")))
            seq, mac = cur.fetchone()
            rows, seqs, seq, mac = self._chain(int(seq), mac, records)
            cur.executemany(db.sql(self._INSERT), rows)
            cur.execute(db.sql(self._MOVE_HEAD), (seq, mac))
        return seqs

    @property
    def appends_async(self) -> bool:
        """Whether :meth:`append_many_async` can run here (PostgreSQL)."""
        return self._db.async_hot is not None

    # One statement, one transaction, one round trip: move the head from (seq, mac) as this
    # process last left it, and insert the rows only if that move happened.
    # The rows travel as one JSON text (json_to_recordset), not as five arrays: psycopg dumps
    # arrays element by element in Python with a regex per text element, which was 15% of the
    # secure server's CPU under load (py-spy); one C-encoded JSON string costs a fraction of it.
    _APPEND_IF_HEAD = (
        "WITH h AS (UPDATE serve_audit_head SET seq = %s, mac = %s WHERE id = 1 AND seq = %s AND mac = %s "
        "AND (%s::bigint IS NULL OR %s::bigint = (SELECT revision FROM serve_revision WHERE id = 1)) "
        "RETURNING 1) INSERT INTO serve_audit_log (seq, ts, body, prev_mac, mac) "
        "SELECT r.seq, r.ts, r.body, r.prev_mac, r.mac FROM json_to_recordset(%s::json) "
        "AS r(seq bigint, ts text, body text, prev_mac text, mac text) "
        "WHERE EXISTS (SELECT 1 FROM h) RETURNING seq")
    _ROW_KEYS = ("seq", "ts", "body", "prev_mac", "mac")
    _HEAD_AND_REVISION = ("SELECT h.seq, h.mac, r.revision FROM serve_audit_head h JOIN serve_revision r ON r.id = 1 "
                          "WHERE h.id = 1 FOR UPDATE OF h")

    async def append_many_async(self, records: list[dict[str, Any]], *, key_revision: int | None = None
                                ) -> list[int]:
        """:meth:`append_many` on the event loop (PostgreSQL; see :mod:`torchshield.serve.db_async`).

        While this process is the chain's only writer, the append is one statement that moves
        the head from where this process last left it and inserts the rows only if that move
        happened: one round trip (~0.2 ms against the local server) instead of the locked path's
        BEGIN, ``SELECT ... FOR UPDATE``, INSERT, UPDATE and COMMIT (~1.0-1.2 ms). If another
        writer moved the head meanwhile (another worker, a thread of ours), the statement
        changes nothing and the locked path runs; it stays in use until a locked commit finds
        the head where this process left it, so that several busy workers do not pay for both.

        ``key_revision``: the records were decided on key rows read under this revision of the
        keys and policies (cached rows, see ``KeyStore.authenticate_cached``); they are appended
        only if it is still the database's, in the same statement (or transaction), else nothing
        is written and :class:`KeysChanged` tells the callers to decide again."""
        db = self._db
        hint = self._head_hint
        if hint is not None and self._hint_trusted:
            rows, seqs, seq, mac = self._chain(hint[0], hint[1], records)
            payload = _ROWS_JSON.encode([dict(zip(self._ROW_KEYS, row, strict=True)) for row in rows])
            done = await db.async_hot.execute_returning(self._APPEND_IF_HEAD,
                                                        (seq, mac, *hint, key_revision, key_revision, payload))
            if len(done) == len(rows):
                self._head_hint = (seq, mac)
                self.commits["one_statement"] += 1
                return seqs
            self._hint_trusted = False
        async with db.async_hot.writing() as cur:
            await cur.execute(self._HEAD_AND_REVISION)
            seq, mac, revision = await cur.fetchone()
            seq = int(seq)
            trusted = (seq, mac) == self._head_hint  # nobody else wrote since this process did
            if key_revision is not None and int(revision) != key_revision:
                self._hint_trusted = trusted  # the chain is as this process left it: nothing to distrust
                self.commits["keys_changed"] += 1
                raise KeysChanged(int(revision))  # rolls the transaction back: nothing written
            rows, seqs, seq, mac = self._chain(seq, mac, records)
            await cur.executemany(db.sql(self._INSERT), rows)
            await cur.execute(db.sql(self._MOVE_HEAD), (seq, mac))
        self._head_hint, self._hint_trusted = (seq, mac), trusted or self._head_hint is None
        self.commits["locked"] += 1
        return seqs

    def append(self, record: dict[str, Any]) -> int:
        return self.append_many([record])[0]

    def head(self) -> tuple[int, str]:
        """The head ``(seq, mac)``; IntegrityError if its row is gone (the log was tampered with)."""
        found = self.head_or_none()
        if found is None:
            from torchshield.errors import IntegrityError

            raise IntegrityError("the audit log's head row is missing (deleted)",
                                 hint="run `torchshield audit verify` and restore the database from a backup")
        return found.seq, found.mac

    def head_or_none(self) -> ChainHead | None:
        import sqlalchemy as sa

        head = self._db.t("audit_head")
        with self._db.reading() as conn:
            row = conn.execute(sa.select(head.c.seq, head.c.mac).where(head.c.id == 1)).first()
        return None if row is None else ChainHead(int(row.seq), row.mac)

    def iter_rows(self, *, since: str | None = None, after_seq: int = 0, limit: int | None = None,
                  everything: bool = False) -> Iterator[Any]:
        """Rows numbered ``after_seq+1..head``, oldest first (``everything``: every stored row,
        whatever its number, for :meth:`verify`)."""
        import sqlalchemy as sa

        log, head = self._db.t("audit_log"), self._db.t("audit_head")
        stmt = sa.select(log).order_by(log.c.seq)
        if not everything:
            stmt = stmt.where(log.c.seq > max(after_seq, 0),
                              log.c.seq <= sa.select(head.c.seq).where(head.c.id == 1).scalar_subquery())
        if since:
            stmt = stmt.where(log.c.ts >= since)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._db.reading() as conn:
            yield from conn.execution_options(yield_per=2000).execute(stmt)

    def records(self, *, since: str | None = None, after_seq: int = 0, limit: int | None = None) -> list[dict]:
        """Records as dicts (their bodies plus ``mac``), oldest first."""
        return [{**json.loads(r.body), "mac": r.mac} for r in self.iter_rows(since=since, after_seq=after_seq,
                                                                               limit=limit)]

    def count(self) -> int:
        import sqlalchemy as sa

        with self._db.reading() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self._db.t("audit_log"))).scalar_one())

    def verify(self) -> VerifyReport:
        """Walk the whole chain (every stored row, against the head); the report names the first
        record that does not check out, or the head if it is missing or disagrees."""
        head = self.head_or_none()

        def check_body(row: ChainRow) -> str | None:
            try:
                body = json.loads(row.body)
            except ValueError:
                return f"record {row.seq} is not valid JSON"
            if not isinstance(body, dict) or body.get("seq") != row.seq or body.get("ts") != ts[row.seq]:
                return f"record {row.seq} was moved or its time edited"
            return None

        ts: dict[int, str] = {}

        def rows() -> Iterator[ChainRow]:
            for r in self.iter_rows(everything=True):
                seq = int(r.seq)
                ts.clear()
                ts[seq] = r.ts
                yield ChainRow(seq, r.body, r.prev_mac, r.mac)

        rep = self._keyed.verify(rows(), head, check_body=check_body)
        return VerifyReport(rep.ok, rep.records, head.seq if head else -1, head.mac if head else "",
                            rep.first_bad, rep.reason)


def _relay(loop: asyncio.AbstractEventLoop, waiter: Any, fut: Future) -> None:
    """A thread-side future's done callback: settle ``waiter`` on its loop's thread."""
    loop.call_soon_threadsafe(_settle, waiter, fut)


def _settle(waiter: Any, fut: Future) -> None:
    """Copy a finished thread-side future into an asyncio one (on the loop's thread)."""
    if waiter.done():
        return
    if fut.exception() is not None:
        waiter.set_exception(fut.exception())
    else:
        waiter.set_result(fut.result())


class AuditWriter:
    """Group commit: :meth:`write` blocks until the record is committed and returns its seq.

    A caller that finds no commit in progress commits its record itself, on its own thread,
    together with anything queued: a lone request pays one append and no hand-off to another
    thread (~0.2 ms on this machine). A caller that finds a commit in progress queues its record
    for the writer thread, which takes everything queued in one transaction as soon as the
    current commit ends: under concurrency, many requests share one commit. The HTTP layer calls
    this before the response starts, so an acknowledged request always has its record; if a
    commit fails, every record in it gets the exception."""

    def __init__(self, log: AuditLog, *, max_batch: int = 512) -> None:
        self._log = log
        self._max = max_batch
        self._pending: list[tuple[dict[str, Any], Future]] = []
        self._turn: list[tuple[dict[str, Any], Any]] = []  # this loop turn's records (write_async)
        self._next_commit = None  # PostgreSQL: records committed on the loop, one commit in flight
        if log.appends_async:
            from torchshield.serve.db_async import NextBatch

            self._next_commit = NextBatch(self._append_async, max_batch=max_batch, timeout=COMMIT_TIMEOUT_S)
        self._queue_lock = threading.Lock()
        self._committing = threading.Lock()
        self._wake: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="torchshield-audit", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, Any], *, timeout: float | None = 60.0) -> int:
        fut: Future = Future()
        if not self._commit_here(record, fut):
            self._enqueue(record, fut)
        return fut.result(timeout=timeout)

    async def write_async(self, record: dict[str, Any], *, on_loop: bool = False,
                          timeout: float = COMMIT_TIMEOUT_S, key_revision: int | None = None) -> int:
        """:meth:`write` for an event loop.

        With ``on_loop`` (SQLite, where a commit takes ~0.1 ms) the records that reach this call
        in one turn of the loop are committed together on the loop's own thread, right after
        that turn: a lone request pays no hand-off to another thread, and under load one commit
        serves every request answered in the same turn, with no second thread competing for the
        interpreter. On PostgreSQL the record joins the loop's next asynchronous commit: one is
        in flight at a time, and everything that arrives meanwhile goes into the next (group
        commit without a thread; the round trips are the loop's own waits); ``key_revision``:
        the request was decided on a cached key row read under that revision, and its record is
        committed only if the revision still stands (else :class:`KeysChanged`). Otherwise the
        record joins the writer thread's next batch and the coroutine waits without blocking
        the loop."""
        if on_loop:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._turn.append((record, waiter))
            if len(self._turn) == 1:
                loop.call_soon(self._commit_turn)
            return await waiter
        if self._next_commit is not None:
            # the batch has the timeout: one timer, not one each
            seq = await self._next_commit.submit((record, key_revision))
            if isinstance(seq, KeysChanged):
                raise seq
            return seq
        fut: Future = Future()
        self._enqueue(record, fut)
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    async def _append_async(self, items: list[tuple[dict[str, Any], int | None]]) -> list[Any]:
        """One PostgreSQL append for a batch of ``(record, key revision or None)``, guarded by the
        revision its cached decisions relied on (:meth:`AuditLog.append_many_async`). If the keys
        changed, the records decided on fresh rows (revision None) are appended on their own and
        each guarded one gets a :class:`KeysChanged` as its result (:meth:`write_async` raises it):
        a stale batch-mate never costs a fresh request its answer."""
        revisions = {rev for _, rev in items if rev is not None}
        try:
            if len(revisions) > 1:  # decided under two revisions: at least one is stale, decide them all again
                raise KeysChanged(max(revisions))
            return await self._log.append_many_async([rec for rec, _ in items],
                                                     key_revision=revisions.pop() if revisions else None)
        except KeysChanged as exc:
            out: list[Any] = [exc] * len(items)
            fresh = [i for i, (_, rev) in enumerate(items) if rev is None]
            if fresh:
                seqs = await self._log.append_many_async([items[i][0] for i in fresh])
                for i, seq in zip(fresh, seqs, strict=True):
                    out[i] = seq
            return out

    def _commit_turn(self) -> None:
        """Commit this loop turn's records on the loop, unless another writer (a thread of
        ours, another worker process, the WAL checkpoint) holds the lock: then the writer
        thread takes them and the loop goes on."""
        batch, self._turn = self._turn, []
        if self._committing.acquire(blocking=False):
            try:
                self._commit(batch, wait=False)
                return
            except WriteBusy:
                pass
            finally:
                self._committing.release()
        loop = asyncio.get_running_loop()
        for record, waiter in batch:
            fut: Future = Future()
            fut.add_done_callback(functools.partial(_relay, loop, waiter))
            self._enqueue(record, fut)

    def _commit_here(self, record: dict[str, Any], fut: Future) -> bool:
        """Commit ``record`` (and anything queued) on this thread unless a commit is running."""
        if not self._committing.acquire(blocking=False):
            return False
        try:
            self._commit([*self._take(), (record, fut)])
        finally:
            self._committing.release()
        return True

    def _enqueue(self, record: dict[str, Any], fut: Future) -> None:
        with self._queue_lock:
            self._pending.append((record, fut))
        self._wake.put(True)

    def _take(self) -> list[tuple[dict[str, Any], Future]]:
        with self._queue_lock:
            batch, self._pending = self._pending[: self._max], self._pending[self._max:]
        return batch

    def _run(self) -> None:
        stop = False
        while not stop:
            stop = not self._wake.get()
            while True:  # one pass serves every wake-up queued meanwhile
                try:
                    stop |= not self._wake.get_nowait()
                except queue.Empty:
                    break
            with self._committing:
                while batch := self._take():
                    self._commit(batch)

    def _commit(self, batch: list[tuple[dict[str, Any], Any]], *, wait: bool = True) -> None:
        try:
            seqs = self._log.append_many([rec for rec, _ in batch], wait=wait)
        except WriteBusy:
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting request learns its record failed
            settle_all([fut for _, fut in batch], exc=exc)
        else:
            settle_all([fut for _, fut in batch], seqs)

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        self._wake.put(False)
        self._thread.join(timeout=10)
