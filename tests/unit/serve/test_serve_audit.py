"""The audit chain detects edits, deletions, insertions, reordering and a cut tail, naming the
first bad record; concurrent writers keep one unbroken chain."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy as sa

from torchshield.serve.audit import AuditLog, AuditWriter


@pytest.fixture
def log(db, master_key):
    audit = AuditLog(db, master_key)
    audit.append_many([{"action": "predict", "key_id": f"k{i}", "status": 200} for i in range(10)])
    return audit


def _exec(db, stmt):
    with db.writing() as conn:
        conn.execute(stmt)


def test_intact_chain_verifies(log):
    report = log.verify()
    assert report.ok and report.records == 10 and report.head_seq == 10 and report.first_bad is None


def test_edit_is_detected(db, log):
    t = db.t("audit_log")
    body = json.loads(next(r for r in log.iter_rows() if r.seq == 4).body)
    body["status"] = 403
    _exec(db, sa.update(t).where(t.c.seq == 4).values(body=json.dumps(body, sort_keys=True, separators=(",", ":"))))
    report = log.verify()
    assert not report.ok and report.first_bad == 4 and "edited" in report.reason


def test_deleting_a_record_is_detected(db, log):
    _exec(db, sa.delete(db.t("audit_log")).where(db.t("audit_log").c.seq == 6))
    report = log.verify()
    assert not report.ok and report.first_bad == 6


def test_inserted_record_is_detected(db, log, master_key):
    from torchshield.crypto.keys import generate_master_key

    t = db.t("audit_log")
    rows = list(log.iter_rows())
    _exec(db, sa.update(t).where(t.c.seq > 5).values(seq=t.c.seq + 1000))  # make room without the key
    forger = AuditLog(db, generate_master_key())
    body = f'{{"action":"predict","seq":6,"ts":"{rows[5].ts}"}}'
    _exec(db, sa.insert(t).values(seq=6, ts=rows[5].ts, body=body, prev_mac=rows[4].mac,
                                  mac=forger._mac(rows[4].mac, body)))
    report = log.verify()
    assert not report.ok and report.first_bad == 6


def test_reordering_is_detected(db, log):
    t = db.t("audit_log")
    _exec(db, sa.update(t).where(t.c.seq == 3).values(seq=-3))
    _exec(db, sa.update(t).where(t.c.seq == 7).values(seq=3))
    _exec(db, sa.update(t).where(t.c.seq == -3).values(seq=7))
    report = log.verify()
    assert not report.ok and report.first_bad == 3


def test_cut_tail_is_detected(db, log):
    _exec(db, sa.delete(db.t("audit_log")).where(db.t("audit_log").c.seq >= 9))
    report = log.verify()
    assert not report.ok and report.first_bad == 9 and "head" in report.reason


def test_other_key_cannot_verify(db, log):
    from torchshield.crypto.keys import generate_master_key

    report = AuditLog(db, generate_master_key()).verify()
    assert not report.ok and report.first_bad == 1


def test_concurrent_writers_keep_one_chain(db, master_key):
    log = AuditLog(db, master_key)
    writers = [AuditWriter(log), AuditWriter(AuditLog(db, master_key))]  # two "workers"
    seqs, lock = [], threading.Lock()

    def client(i: int) -> None:
        for j in range(25):
            seq = writers[(i + j) % 2].write({"action": "predict", "key_id": f"t{i}", "n": j})
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for w in writers:
        w.close()
    assert sorted(seqs) == list(range(1, 201))
    assert log.verify().ok and log.count() == 200


def test_writer_batches_requests_queued_behind_a_commit(db, master_key):
    """Group commit: records that arrive while a commit runs go out together in the next one."""
    first_commit_started, release = threading.Event(), threading.Event()
    batches: list[int] = []

    class SlowLog(AuditLog):
        def append_many(self, records, wait=True):
            batches.append(len(records))
            if len(batches) == 1:
                first_commit_started.set()
                release.wait(10)
            return super().append_many(records)

    writer = AuditWriter(SlowLog(db, master_key))
    results: dict[int, int] = {}
    leader = threading.Thread(target=lambda: results.__setitem__(0, writer.write({"action": "a", "n": 0})))
    leader.start()
    assert first_commit_started.wait(10)
    followers = [threading.Thread(target=lambda i=i: results.__setitem__(i, writer.write({"action": "a", "n": i})))
                 for i in range(1, 6)]
    for th in followers:
        th.start()
    deadline = time.time() + 60
    while len(writer._pending) < 5 and time.time() < deadline:
        time.sleep(0.01)
    release.set()
    for th in [leader, *followers]:
        th.join(10)
    writer.close()
    assert batches == [1, 5]
    assert sorted(results.values()) == [1, 2, 3, 4, 5, 6] and results[0] == 1
    assert AuditLog(db, master_key).verify().ok


def _counting_log(db, master_key, calls):
    class Log(AuditLog):
        def append_many(self, records, wait=True):
            calls.append((len(records), threading.current_thread().name))
            return super().append_many(records, wait=wait)

    return Log(db, master_key)


def test_lone_write_commits_on_the_callers_thread(db, master_key):
    calls: list[tuple[int, str]] = []
    w = AuditWriter(_counting_log(db, master_key, calls))
    assert [w.write({"action": "a", "n": i}) for i in range(3)] == [1, 2, 3]
    w.close()
    threads = [name for _, name in calls]
    assert threads == [threading.current_thread().name] * 3  # no hand-off to the writer thread


def test_writer_failure_reaches_every_waiting_request(db, master_key):
    class BrokenLog(AuditLog):
        def append_many(self, records, wait=True):
            raise RuntimeError("disk full")

    writer = AuditWriter(BrokenLog(db, master_key))
    with pytest.raises(RuntimeError, match="disk full"):
        writer.write({"action": "a"})
    writer.close()


def test_records_hold_no_raw_body(db, master_key):
    log = AuditLog(db, master_key)
    # A marker no timestamp, number or hex digest can contain by chance (it has letters and dashes).
    secret_input = b'{"inputs": [[1.5, 2.5]], "note": "raw-body-marker-q7"}'
    log.append({"action": "predict", "body_digest": log.digest(secret_input)})
    text = json.dumps(log.records())
    assert "raw-body-marker-q7" not in text and log.digest(secret_input) in text


def test_wal_checkpoints_run_off_the_request_path(tmp_path, master_key):
    """With the checkpointer on, no commit copies the WAL back (the default does so in whichever
    commit crosses 1000 pages, ~6 ms); the background thread does it instead."""
    from torchshield.serve.db import open_database

    path = tmp_path / "c.db"
    db = open_database(f"sqlite:///{path}")
    db.start_checkpointer(interval=3600)  # the thread sleeps through the appends
    log = AuditLog(db, master_key)
    size = path.stat().st_size
    for i in range(500):  # ~1600 WAL pages: past the default auto-checkpoint threshold
        log.append({"action": "predict", "n": i})
    assert path.stat().st_size == size
    assert (tmp_path / "c.db-wal").stat().st_size > 1000 * 4096

    other = open_database(f"sqlite:///{path}", create=False)  # a second worker; it only reads
    other.start_checkpointer(interval=0.05)
    deadline = time.time() + 60
    while path.stat().st_size == size and time.time() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size > size  # its thread copied the records into the database file
    assert AuditLog(other, master_key).verify().ok and AuditLog(other, master_key).count() == 500
    other.dispose()
    db.dispose()


def test_write_async_commits_one_loop_turn_together_on_the_loop(db, master_key):
    """Records that reach the writer in one turn of the event loop share one commit, made on the
    loop's own thread (no hand-off); each caller gets its own sequence number."""
    import asyncio

    calls: list[tuple[int, str]] = []
    log = _counting_log(db, master_key, calls)
    writer = AuditWriter(log)

    async def burst() -> list[int]:
        return await asyncio.gather(*(writer.write_async({"action": "a", "n": i}, on_loop=True) for i in range(10)))

    assert sorted(asyncio.run(burst())) == list(range(1, 11))
    writer.close()
    assert calls == [(10, threading.current_thread().name)]
    assert log.verify().ok and [r["n"] for r in log.records()] == list(range(10))


def test_write_async_hands_over_when_another_writer_holds_the_lock(db, master_key):
    """While another writer (here: a thread holding the write lock, as the WAL checkpoint or
    another worker process does) is busy, the loop does not wait: the writer thread commits the
    record once the lock is free, and the loop keeps running meanwhile."""
    import asyncio

    calls: list[tuple[int, str]] = []
    log = _counting_log(db, master_key, calls)
    writer = AuditWriter(log)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with db._file_lock():
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(10)

    async def scenario() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        pending = asyncio.create_task(writer.write_async({"action": "a"}, on_loop=True))
        await asyncio.sleep(0.2)
        assert not pending.done()  # still waiting for the lock...
        seen = ticks
        release.set()
        seq = await pending
        tick.cancel()
        return seq, seen

    seq, ticks = asyncio.run(scenario())
    t.join()
    writer.close()
    assert seq == 1 and ticks >= 5  # ...while the loop went on running
    assert calls[-1] == (1, "torchshield-audit") and log.verify().ok


def test_checkpointer_keeps_the_wal_bounded_under_steady_writes(tmp_path, master_key):
    """Racing steady commits, a plain PASSIVE checkpoint never catches up and the WAL only grows
    (~14 KB per commit here). Past ``restart_bytes`` the checkpointer runs once more under the
    write lock, so the WAL starts over."""
    from torchshield.serve.db import open_database

    path = tmp_path / "w.db"
    db = open_database(f"sqlite:///{path}")
    db.start_checkpointer(interval=0.02, restart_bytes=1 << 20)
    log = AuditLog(db, master_key)
    for i in range(4000):  # ~35 MiB of WAL if it were never started over
        log.append({"action": "predict", "n": i})
    wal = (tmp_path / "w.db-wal").stat().st_size
    assert wal < 16 * 2**20, f"WAL grew to {wal / 2**20:.1f} MiB"
    assert log.verify().ok and log.count() == 4000
    db.dispose()
