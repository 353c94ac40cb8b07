"""The audit record is committed before the answer leaves, and the service fails closed: if the
record cannot be written, the caller gets a 503 and never the model's output. A route that
commits early with one status and then answers with another leaves an ``.amend`` record."""

from __future__ import annotations

import sqlite3

import httpx
from fastapi import Request  # module level: FastAPI resolves the route's string annotation here
from fastapi.responses import JSONResponse
from serve_harness import make_service, running


def _service(tmp_path):
    from torchshield.crypto.keys import generate_master_key

    svc = make_service(tmp_path, generate_master_key(), rate_per_s=1000, burst=1000)
    return svc, svc.keys.create(role="admin").token


def test_failed_audit_write_withholds_the_answer(tmp_path):
    from torchshield.serve.http import create_app

    svc, token = _service(tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=30) as client:
            ok = client.post("/v1/models/digits/predict", json={"inputs": [[1.0] * 8]}, headers=auth)
            assert ok.status_code == 200
            with sqlite3.connect(tmp_path / "serve.db") as raw:  # the audit table goes away under the server
                raw.execute("ALTER TABLE serve_audit_log RENAME TO gone")
            for method, path, body in [("POST", "/v1/models/digits/predict", {"inputs": [[1.0] * 8]}),
                                       ("GET", "/v1/models", None)]:
                r = client.request(method, path, json=body, headers=auth)
                assert r.status_code == 503, (path, r.text)
                assert r.json()["error"]["code"] == "unavailable"
                assert "predictions" not in r.text and "serve_audit_log" not in r.text
    finally:
        svc.close()


def test_a_status_changed_after_an_early_commit_is_amended(tmp_path):
    from torchshield.serve.http import audit_context, create_app

    svc, token = _service(tmp_path)
    app = create_app(svc)

    @app.post("/test/early")
    def early(request: Request) -> JSONResponse:  # commits "200", then answers 500: the log must not claim a 200
        ctx = audit_context(request)
        ctx.action, ctx.route = "test.early", "/test/early"
        request.app.state.path.commit_now(ctx, 200)
        return JSONResponse({"error": {"code": "internal_error", "message": "x"}}, 500)

    try:
        with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            before = svc.audit.head()[0]
            assert client.post("/test/early").status_code == 500
    finally:
        svc.close()
    records = svc.audit.records(after_seq=before)
    assert [(r["action"], r["status"]) for r in records] == [("test.early", 200), ("test.early.amend", 500)]
    assert records[1]["detail"] == {"amends_status": 200}
    assert svc.audit.verify().ok
