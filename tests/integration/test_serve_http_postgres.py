"""The PostgreSQL path for real: keys, Casbin policies and the audit chain in PostgreSQL, two
services ("workers") on one database, revocation seen by the other, chain intact under
concurrent writes and tampering detected. Runs when TORCHSHIELD_TEST_PG_URL points at a server
(`eval "$(.ci/postgres.sh)"` starts one); otherwise skipped with that reason."""

from __future__ import annotations

import threading

import httpx
import pytest
from serve_harness import make_service, running

pytestmark = pytest.mark.integration  # the pg_db fixture (tests/integration/conftest.py) skips without a server
X = [[2.0] * 8]


def test_postgres_two_workers_revocation_and_chain(tmp_path, master_key, pg_db):
    import sqlalchemy as sa

    from torchshield.serve.http import create_app

    a = make_service(tmp_path, master_key, db_url=pg_db, models=("digits",))
    (tmp_path / "b").mkdir()
    b = make_service(tmp_path / "b", master_key, db_url=pg_db, models=("digits",))
    assert a.db.read_engine.dialect.name == "postgresql"
    admin = a.keys.create(role="admin").token
    try:
        with running(create_app(a)) as url_a, running(create_app(b)) as url_b:
            hdr = {"Authorization": f"Bearer {admin}"}
            created = httpx.post(f"{url_a}/v1/keys", headers=hdr, json={"role": "predictor", "models": ["digits"]})
            token, key_id = created.json()["token"], created.json()["key"]["key_id"]
            user = {"Authorization": f"Bearer {token}"}
            assert httpx.post(f"{url_b}/v1/models/digits/predict", headers=user, json={"inputs": X}).status_code == 200
            statuses: list[int] = []

            def client(url: str) -> None:
                with httpx.Client(base_url=url, timeout=30) as c:
                    for _ in range(15):
                        statuses.append(c.post("/v1/models/digits/predict", headers=user,
                                               json={"inputs": X}).status_code)

            threads = [threading.Thread(target=client, args=(u,)) for u in (url_a, url_b) * 3]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert statuses.count(200) == 90
            assert httpx.delete(f"{url_a}/v1/keys/{key_id}", headers=hdr).status_code == 200
            assert httpx.post(f"{url_b}/v1/models/digits/predict", headers=user, json={"inputs": X}).status_code == 401
            report = httpx.get(f"{url_b}/v1/audit/verify", headers=hdr).json()
        assert report["ok"] and report["records"] == 94 and a.audit.count() == 95  # + the verify request
        t = a.db.t("audit_log")
        with a.db.writing() as conn:
            conn.execute(sa.update(t).where(t.c.seq == 50).values(body=t.c.body + " "))
        bad = a.audit.verify()
        assert not bad.ok and bad.first_bad == 50
    finally:
        a.close()
        b.close()


def test_postgres_down_is_a_clear_startup_error(master_key):
    """Needs no server: nothing listens on port 1."""
    from torchshield.errors import InputError
    from torchshield.serve.db import open_database

    url = "postgresql+psycopg://torchshield:hunter2@127.0.0.1:1/torchshield_test"
    with pytest.raises(InputError, match="unreachable or read-only") as err:
        open_database(url)
    assert "hunter2" not in str(err.value)


def test_postgres_hot_path_recovers_from_lost_connections(pg_db, master_key):
    """The per-request statements use pooled connections without a ping per checkout: when the
    server drops them (a restart, an idle timeout), the key read retries on a fresh connection
    and an audit append fails once, cleanly, and works again next time."""
    import sqlalchemy as sa

    from torchshield.serve.access.keys import KeyStore
    from torchshield.serve.audit import AuditLog
    from torchshield.serve.db import open_database

    db = open_database(pg_db)
    keys, log = KeyStore(db, master_key), AuditLog(db, master_key)
    new = keys.create(role="predictor", models=["digits"])
    assert keys.authenticate(new.token).key_id == new.key.key_id
    log.append({"action": "a"})

    def drop_connections() -> None:
        admin = sa.create_engine(pg_db, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        admin.dispose()

    drop_connections()
    assert keys.authenticate(new.token).key_id == new.key.key_id  # retried on a fresh connection
    drop_connections()
    try:
        log.append({"action": "b"})
    except Exception as exc:  # noqa: BLE001 - the driver's error for the dropped connection
        from torchshield.serve.db_errors import lost_connection

        assert lost_connection(exc)
    log.append({"action": "c"})
    assert [r["action"] for r in log.records()][-1] == "c" and log.verify().ok
    db.dispose()


def test_postgres_event_loop_path_recovers_from_lost_connections(pg_db, master_key):
    """The same on the event loop's pool (what the server's requests use on PostgreSQL): the key
    read is retried on a fresh connection; an append on a dropped connection fails with the
    driver's error and leaves nothing behind, the pool replaces the dropped connections, and an
    append a moment later works."""
    import asyncio

    import sqlalchemy as sa

    from torchshield.serve.access.keys import KeyStore
    from torchshield.serve.audit import AuditLog
    from torchshield.serve.db import open_database
    from torchshield.serve.db_errors import lost_connection

    db = open_database(pg_db)
    keys, log = KeyStore(db, master_key), AuditLog(db, master_key)
    new = keys.create(role="predictor", models=["digits"])

    def drop_connections() -> None:
        """Terminate every other session and wait until they are gone (termination is asynchronous)."""
        import time

        admin = sa.create_engine(pg_db, isolation_level="AUTOCOMMIT")
        others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        with admin.connect() as conn:
            pids = [r[0] for r in conn.exec_driver_sql(f"SELECT pid {others}")]
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM unnest(%(p)s::int[]) AS pid", {"p": pids})
            deadline = time.time() + 60
            while conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%(p)s::int[])",
                                       {"p": pids}).scalar() and time.time() < deadline:
                time.sleep(0.02)
        admin.dispose()

    outcomes: list[tuple[str, bool]] = []

    async def scenario() -> None:
        try:
            await steps()
        finally:
            await db.async_hot.close()

    async def steps() -> None:
        assert log.appends_async
        key, _ = await keys.authenticate_async(new.token)
        assert key.key_id == new.key.key_id
        assert (await keys.authenticate_async(new.token[:-1] + "x"))[0] is None  # the secret is still checked
        await log.append_many_async([{"action": "a"}])
        await asyncio.to_thread(drop_connections)
        key, _ = await keys.authenticate_async(new.token)  # retried on a fresh connection
        assert key.key_id == new.key.key_id
        await asyncio.to_thread(drop_connections)
        for i in range(8):  # fails on a dropped connection, cleanly, until the pool has replaced them
            try:
                await log.append_many_async([{"action": f"b{i}"}])
                outcomes.append((f"b{i}", True))
                break
            except Exception as exc:  # noqa: BLE001 - the driver's error for the dropped connection
                assert lost_connection(exc)
                outcomes.append((f"b{i}", False))

    asyncio.run(scenario())
    # the first append after the drop fails, one of the next few works (the pool's replacements)
    assert outcomes[0][1] is False and outcomes[-1][1] is True and len(outcomes) <= 4
    actions = [r["action"] for r in log.records()]
    assert actions == ["a", outcomes[-1][0]] and log.verify().ok  # failed appends left nothing
    db.dispose()


def test_postgres_records_from_concurrent_requests_share_commits_on_the_loop(pg_db, master_key):
    """write_async on PostgreSQL: one commit in flight, the records that arrive meanwhile go into
    the next; every waiter gets its own seq, the chain stays intact, and a record written from a
    thread at the same time (the monitor's alerts) interleaves safely through the row lock."""
    import asyncio

    from torchshield.serve.audit import AuditLog, AuditWriter
    from torchshield.serve.db import open_database

    db = open_database(pg_db)
    log = AuditLog(db, master_key)
    commits: list[int] = []
    append = log.append_many_async

    async def counting(records, **kw):
        commits.append(len(records))
        return await append(records, **kw)

    log.append_many_async = counting
    writer = AuditWriter(log)

    async def scenario() -> list[int]:
        try:
            side = asyncio.get_running_loop().run_in_executor(None, writer.write, {"action": "thread"})
            seqs = await asyncio.gather(*(writer.write_async({"action": "req", "i": i}) for i in range(50)))
            await side
            return list(seqs)
        finally:
            await db.async_hot.close()

    try:
        seqs = asyncio.run(scenario())
    finally:
        writer.close()
    assert len(set(seqs)) == 50 and sum(commits) == 50 and len(commits) < 50
    records = log.records(limit=100)
    assert sorted(r["i"] for r in records if r["action"] == "req") == list(range(50))
    assert sum(r["action"] == "thread" for r in records) == 1 and log.verify().ok
    db.dispose()


def test_postgres_one_statement_append_falls_back_when_another_worker_wrote(pg_db, master_key):
    """A lone writer appends in one statement (head moved only from where it left it); when
    another writer ("worker") moved the head meanwhile, the statement changes nothing, the locked
    path appends instead, and the chain stays one intact chain with no record lost or doubled."""
    import asyncio

    from torchshield.serve.audit import AuditLog
    from torchshield.serve.db import open_database

    db_a, db_b = open_database(pg_db), open_database(pg_db)
    a, b = AuditLog(db_a, master_key), AuditLog(db_b, master_key)

    async def scenario() -> None:
        try:
            for i in range(4):  # a alone: the first commit locked, the rest one statement each
                await a.append_many_async([{"action": "a", "i": i}])
            assert a.commits == {"locked": 1, "one_statement": 3}
            await b.append_many_async([{"action": "b", "i": 0}])  # another worker moves the head
            await a.append_many_async([{"action": "a", "i": 4}, {"action": "a", "i": 5}])
            assert a.commits["locked"] == 2  # tried one statement, found the head moved, locked
            await a.append_many_async([{"action": "a", "i": 6}])  # the head is where a left it: locked once more
            await a.append_many_async([{"action": "a", "i": 7}])  # ... and trusted again
            assert a.commits == {"locked": 3, "one_statement": 4}
            await asyncio.gather(*(w.append_many_async([{"action": n, "i": 10 + k}])
                                   for k in range(10) for w, n in ((a, "a"), (b, "b"))))
        finally:
            await db_a.async_hot.close()
            await db_b.async_hot.close()

    asyncio.run(scenario())
    records = a.records()
    assert sorted((r["action"], r["i"]) for r in records) == sorted(
        [("a", i) for i in [*range(8), *range(10, 20)]] + [("b", i) for i in [0, *range(10, 20)]])
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)) and a.verify().ok
    db_a.dispose()
    db_b.dispose()


def test_postgres_going_down_mid_run_answers_503_quickly_then_recovers(tmp_path, master_key, pg_db):
    """The database refuses connections while the server runs: requests get a JSON 503 within a
    few seconds (not a bare 500 after the pool's 30 s), nothing about the database leaks, and
    once it is back the next requests work and the chain verifies."""
    import time

    import sqlalchemy as sa

    from torchshield.serve.http import create_app

    svc = make_service(tmp_path, master_key, db_url=pg_db, models=("digits",))
    token = svc.keys.create(role="predictor", models=["digits"]).token
    name = sa.engine.make_url(pg_db).database
    admin = sa.create_engine(sa.engine.make_url(pg_db).set(database="postgres"), isolation_level="AUTOCOMMIT")

    def allow(on: bool) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if on else "false"}')
            if not on:
                conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

    try:
        with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=60) as client:
            hdr = {"Authorization": f"Bearer {token}"}
            assert client.post("/v1/models/digits/predict", headers=hdr, json={"inputs": X}).status_code == 200
            allow(False)
            try:
                for _ in range(2):
                    t0 = time.perf_counter()
                    r = client.post("/v1/models/digits/predict", headers=hdr, json={"inputs": X})
                    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
                    assert time.perf_counter() - t0 < 15  # about 2 s (two 1 s pool waits), not the pool's 30 s; slack for a loaded CI
                    assert name not in r.text and "55432" not in r.text and token not in r.text
            finally:
                allow(True)
            deadline = time.time() + 120
            while (status := client.post("/v1/models/digits/predict", headers=hdr,
                                         json={"inputs": X}).status_code) != 200 and time.time() < deadline:
                time.sleep(0.2)
            assert status == 200
        assert svc.audit.verify().ok
    finally:
        svc.close()
        admin.dispose()


def test_postgres_guarded_append_writes_nothing_once_the_keys_changed(pg_db, master_key):
    """An append guarded by a key revision lands only while that revision stands, on the
    one-statement path and on the locked one; after a key change it writes nothing and says
    KeysChanged with the database's revision, and a batch decided under two revisions is refused."""
    import asyncio

    from torchshield.serve.access.keys import KeyStore
    from torchshield.serve.audit import AuditLog, AuditWriter, KeysChanged
    from torchshield.serve.db import open_database

    db = open_database(pg_db)
    log, keys = AuditLog(db, master_key), KeyStore(db, master_key)
    writer = AuditWriter(log)
    token = keys.create(role="predictor").token

    async def scenario() -> None:
        try:
            _, rev = await keys.authenticate_async(token)
            await log.append_many_async([{"action": "a", "i": 0}], key_revision=rev)  # locked (first)
            await log.append_many_async([{"action": "a", "i": 1}], key_revision=rev)  # one statement
            assert log.commits == {"locked": 1, "one_statement": 1}
            keys.create(role="auditor")  # any key change moves the revision
            before = log.count()
            with pytest.raises(KeysChanged) as stale:
                await log.append_many_async([{"action": "a", "i": 2}], key_revision=rev)
            assert stale.value.revision == rev + 1 and log.count() == before
            assert log.commits["keys_changed"] == 1 and log.commits["locked"] == 1  # the statement, then the lock
            await log.append_many_async([{"action": "a", "i": 3}], key_revision=rev + 1)
            assert log.commits["one_statement"] == 2  # the head stayed trusted: back to one statement
            with pytest.raises(KeysChanged):
                await asyncio.gather(writer.write_async({"action": "w", "i": 0}, key_revision=rev + 1),
                                     writer.write_async({"action": "w", "i": 1}, key_revision=rev))
            await writer.write_async({"action": "w", "i": 2})  # unguarded: always lands
            keys.create(role="auditor")  # rev + 2: a stale guarded record and a fresh one in one batch
            stale, fresh = await asyncio.gather(writer.write_async({"action": "w", "i": 3}, key_revision=rev + 1),
                                                writer.write_async({"action": "w", "i": 4}),
                                                return_exceptions=True)
            assert isinstance(stale, KeysChanged) and isinstance(fresh, int)  # the fresh one is not failed with it
        finally:
            await db.async_hot.close()

    try:
        asyncio.run(scenario())
    finally:
        writer.close()
    assert [(r["action"], r["i"]) for r in log.records()] == [("a", 0), ("a", 1), ("a", 3), ("w", 2), ("w", 4)]
    assert log.verify().ok
    db.dispose()


def test_postgres_cached_key_decisions_are_confirmed_by_the_commit(tmp_path, master_key, pg_db):
    """On the event-loop PostgreSQL path a key seen recently is not read again (one round trip
    per request); a revocation in another worker, or any key change, is caught by the guarded
    commit: the revoked key's next request is answered 401 and recorded as such, nothing else;
    a key change that does not touch the caller costs one fresh read and the request goes through."""
    from torchshield.serve.http import create_app

    a = make_service(tmp_path, master_key, db_url=pg_db, models=("digits",))
    (tmp_path / "b").mkdir()
    b = make_service(tmp_path / "b", master_key, db_url=pg_db, models=("digits",))
    reads: list[int] = []
    read_rows = a.keys._read_rows

    async def counted(key_ids):
        reads.append(len(key_ids))
        return await read_rows(key_ids)

    a.keys._reads._run = counted
    a.keys.cache_ttl = 3600.0  # the age bound is not what this test is about (a slow machine must not flake it)
    new = b.keys.create(role="predictor", models=["digits"])
    user = {"Authorization": f"Bearer {new.token}"}
    try:
        with running(create_app(a)) as url, httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/v1/models/digits/predict", headers=user, json={"inputs": X}).status_code == 200
            assert len(reads) == 1
            for _ in range(5):
                assert c.post("/v1/models/digits/predict", headers=user, json={"inputs": X}).status_code == 200
            assert len(reads) == 1  # answered from the cached row, confirmed by each commit
            b.keys.create(role="auditor")  # a change elsewhere: the next commit refuses, one fresh read
            assert c.post("/v1/models/digits/predict", headers=user, json={"inputs": X}).status_code == 200
            assert len(reads) == 2 and a.audit.commits["keys_changed"] == 1
            assert b.keys.revoke(new.key.key_id)  # revoked in the other worker
            r = c.post("/v1/models/digits/predict", headers=user, json={"inputs": X})
            assert r.status_code == 401 and "predictions" not in r.text
            assert r.headers.get("www-authenticate")
            assert c.post("/v1/models/digits/predict", headers=user, json={"inputs": X}).status_code == 401
        mine = [r for r in a.audit.records() if r.get("key_id") == new.key.key_id or r["status"] == 401]
        assert [r["status"] for r in mine] == [200] * 7 + [401, 401]
        assert a.audit.verify().ok
    finally:
        a.close()
        b.close()
