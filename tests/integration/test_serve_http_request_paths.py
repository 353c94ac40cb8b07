"""The two ways a `predict` runs give the same answers and the same audit trail: on the event
loop (a small model and a small body, the audit record committed with the loop turn's others)
and on a worker thread (large bodies, slow models, or `loop_budget_ms=0`)."""

from __future__ import annotations

import asyncio

import httpx
from serve_harness import make_service, running


def _inputs(i: int, n: int = 1) -> list[list[float]]:
    return [[float((i + j + k) % 17) for k in range(8)] for j in range(n)]


def test_loop_and_worker_paths_answer_alike_and_audit_every_request(tmp_path):
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app

    master = generate_master_key()
    results = {}
    for label, budget in (("loop", 5.0), ("worker", 0.0)):
        (tmp_path / label).mkdir()
        svc = make_service(tmp_path / label, master, rate_per_s=1e6, burst=10**6,
                                             loop_budget_ms=budget)
        token = svc.keys.create(role="predictor", models=["digits"]).token
        try:
            with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=30) as client:
                m = svc.registry.get("digits")
                assert (m.loop_bytes > 0) == (label == "loop")
                big = _inputs(0, 64)  # larger than the loop allows: a worker thread runs it
                assert label == "worker" or len(str(big)) > m.loop_bytes
                answers = [client.post("/v1/models/digits/predict", json={"inputs": x},
                                       headers={"Authorization": f"Bearer {token}"}).json()["predictions"]
                           for x in [_inputs(i) for i in range(20)] + [big]]
                bad = client.post("/v1/models/digits/predict", json={"inputs": [[99.0] * 8]},
                                  headers={"Authorization": f"Bearer {token}"})
                assert bad.status_code == 422
        finally:
            svc.close()
        results[label] = answers
        records = [r for r in svc.audit.records() if r["action"] == "predict"]
        assert [r["status"] for r in records] == [200] * 21 + [422]
        assert svc.audit.verify().ok
    assert results["loop"] == results["worker"]


def test_concurrent_requests_on_the_loop_each_get_one_committed_record(tmp_path):
    """64 requests from 32 connections at once: every one answered and recorded exactly once,
    the chain intact (records committed per loop turn, several requests per commit)."""
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.audit import AuditLog
    from torchshield.serve.http import create_app

    svc = make_service(tmp_path, generate_master_key(), rate_per_s=1e6, burst=10**6)
    token = svc.keys.create(role="predictor", models=["digits"]).token
    commits: list[int] = []
    append = AuditLog.append_many

    def counting(self, records, wait=True):
        commits.append(len(records))
        return append(self, records, wait=wait)

    svc.audit.append_many = counting.__get__(svc.audit)

    async def burst(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            rs = await asyncio.gather(*(client.post("/v1/models/digits/predict", json={"inputs": _inputs(i)},
                                                    headers={"Authorization": f"Bearer {token}"})
                                        for i in range(64)))
        return [r.status_code for r in rs]

    try:
        with running(create_app(svc)) as url:
            assert asyncio.run(burst(url)) == [200] * 64
    finally:
        svc.close()
    predicts = [r for r in svc.audit.records() if r["action"] == "predict"]
    assert len(predicts) == 64 and svc.audit.verify().ok
    assert sum(commits) >= 64 and len(commits) < sum(commits)  # some commits carried several records


def _db_rate_limited_path(tmp_path, db_url):
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app

    svc = make_service(tmp_path, generate_master_key(), db_url=db_url, rate_store="db", rate_per_s=0.01, burst=3)
    token = svc.keys.create(role="predictor", models=["digits"]).token
    try:
        with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=30) as client:
            hdr = {"Authorization": f"Bearer {token}"}
            statuses = [client.post("/v1/models/digits/predict", json={"inputs": _inputs(i)}, headers=hdr)
                        for i in range(4)]
            unknown = client.post("/v1/models/nope/predict", json={"inputs": _inputs(0)}, headers=hdr)
    finally:
        svc.close()
    assert [r.status_code for r in statuses] == [200, 200, 200, 429] and unknown.status_code == 403
    assert int(statuses[-1].headers["retry-after"]) >= 1
    records = [r for r in svc.audit.records() if r["action"] == "predict"]
    assert [r["status"] for r in records] == [200, 200, 200, 429, 403] and svc.audit.verify().ok
    assert all("amends_status" not in (r.get("detail") or {}) for r in records)  # committed early, once


def test_rate_limits_in_the_database_take_the_worker_thread_path(tmp_path):
    """`--rate-limit-store db`: the whole request on one worker thread, its record committed
    there before the response (SQLite)."""
    _db_rate_limited_path(tmp_path, None)


def test_rate_limits_in_the_database_take_the_worker_thread_path_on_postgres(tmp_path, pg_db):
    _db_rate_limited_path(tmp_path, pg_db)
