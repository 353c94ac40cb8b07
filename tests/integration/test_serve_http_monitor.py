"""Extraction monitoring end to end: a key that probes the model with near-identical inputs is
flagged in /metrics and in the audit chain (the monitor runs after the answer, off the request
path), while its requests keep being answered."""

from __future__ import annotations

import httpx
from serve_harness import make_service, running


def test_probing_key_is_flagged_in_metrics_and_audit_log(tmp_path):
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app

    svc = make_service(tmp_path, generate_master_key(), rate_per_s=1000, burst=1000,
                       monitor={"min_queries": 20, "test_every": 10, "query_budget": 60})
    prober = svc.keys.create(role="predictor", models=["digits"])
    monitor = svc.keys.create(role="monitor").token
    x = [[1.0] * 8]
    try:
        with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=30) as client:
            auth = {"Authorization": f"Bearer {prober.token}"}
            statuses = {client.post("/v1/models/digits/predict", json={"inputs": x}, headers=auth).status_code
                        for _ in range(70)}
            assert statuses == {200}  # flagged, not blocked
            assert svc.monitor_idle()
            text = client.get("/metrics", headers={"Authorization": f"Bearer {monitor}"}).text
    finally:
        svc.close()
    assert 'torchshield_extraction_alerts_total{kind="near_duplicates"} 1.0' in text
    assert 'torchshield_extraction_alerts_total{kind="budget"} 1.0' in text
    assert prober.key.key_id not in text  # no per-key labels (unbounded); per-key data is in the audit log
    assert 'torchshield_predictions_total{model="digits"} 70.0' in text
    alerts = [r for r in svc.audit.records() if r["action"] == "monitor.alert"]
    assert sorted(a["reason"] for a in alerts) == ["budget", "near_duplicates"]
    assert all(a["key_id"] == prober.key.key_id for a in alerts)
    assert svc.audit.verify().ok


def test_monitor_keeps_up_under_concurrent_requests(tmp_path):
    """Batched monitoring counts every input, whatever way the requests interleave."""
    import concurrent.futures

    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app

    svc = make_service(tmp_path, generate_master_key(), rate_per_s=1000, burst=1000)
    keys = [svc.keys.create(role="predictor", models=["digits"]) for _ in range(3)]
    try:
        with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=30,
                                                          limits=httpx.Limits(max_connections=16)) as client:
            def send(i: int) -> int:
                k = keys[i % 3]
                return client.post("/v1/models/digits/predict", json={"inputs": [[float(i % 16)] * 8] * 2},
                                   headers={"Authorization": f"Bearer {k.token}"}).status_code

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                assert set(pool.map(send, range(90))) == {200}
            assert svc.monitor_idle()  # every answered request queued its inputs before answering
            snap = svc.monitor.snapshot()
    finally:
        svc.close()
    assert {snap[k.key.key_id]["queries"] for k in keys} == {60}


def test_benchmark_reference_monitors_without_security(tmp_path):
    """The benchmark's reference app (benchmarks/serve_reference.py: auth, RBAC and audit off)
    still monitors, every caller as one anonymous key."""
    import sys
    from pathlib import Path

    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from serve_reference import OpenPath

    svc = make_service(tmp_path, generate_master_key())
    try:
        with running(create_app(svc, path=OpenPath(svc, monitored=True))) as url, \
                httpx.Client(base_url=url, timeout=30) as client:
            for i in range(5):  # no Authorization header: security is off
                r = client.post("/v1/models/digits/predict", json={"inputs": [[float(i)] * 8] * 3})
                assert r.status_code == 200
            assert svc.monitor_idle()
    finally:
        svc.close()
    assert svc.monitor.snapshot()["anonymous"]["queries"] == 15
    assert svc.audit.count() == 0  # audit off: no request records
