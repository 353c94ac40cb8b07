"""The real service on a loopback port: the authorization matrix (role x endpoint x scope),
bad input, revocation, rate limiting and one audit record per request."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_harness import make_service, running

ROLES = ["admin", "owner", "predictor", "auditor", "monitor"]
X = [[1.0] * 8]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app

    tmp = tmp_path_factory.mktemp("serve")
    master = generate_master_key()
    svc = make_service(tmp, master, body_limit=64 * 1024, rate_per_s=1000, burst=1000)
    toks = {r: svc.keys.create(role=r).token for r in ROLES}
    toks["scoped"] = svc.keys.create(role="predictor", models=["digits"]).token
    toks["owner_digits"] = svc.keys.create(role="owner", models=["digits"]).token
    toks["expired"] = svc.keys.create(role="admin", expires_in=1e-6).token
    revoked = svc.keys.create(role="admin")
    svc.keys.revoke(revoked.key.key_id)
    toks["revoked"] = revoked.token
    with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, toks, svc
    svc.close()


def call(server, who, method, path, **kw):
    client, toks, _ = server
    headers = kw.pop("headers", {})
    if who is not None:
        headers["Authorization"] = f"Bearer {toks.get(who, who)}"
    return client.request(method, path, headers=headers, **kw)


# (method, path, body, roles allowed) -> everyone else with a valid key gets 403
MATRIX = [
    ("GET", "/metrics", None, {"admin", "monitor"}),
    ("GET", "/v1/models/digits", None, {"admin", "owner", "predictor", "scoped", "owner_digits"}),
    ("GET", "/v1/models/iris", None, {"admin", "owner", "predictor"}),
    ("POST", "/v1/models/digits/predict", {"inputs": X}, {"admin", "owner", "predictor", "scoped", "owner_digits"}),
    ("POST", "/v1/models/iris/predict", {"inputs": X}, {"admin", "owner", "predictor"}),
    ("GET", "/v1/keys", None, {"admin", "owner", "owner_digits"}),
    ("GET", "/v1/audit", None, {"admin", "auditor"}),
    ("GET", "/v1/audit/verify", None, {"admin", "auditor"}),
    ("GET", "/v1/models", None, set(ROLES) | {"scoped", "owner_digits"}),
]
CALLERS = [*ROLES, "scoped", "owner_digits"]


@pytest.mark.parametrize("method,path,body,allowed", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_authorization_matrix(server, method, path, body, allowed):
    for who in CALLERS:
        r = call(server, who, method, path, json=body)
        assert r.status_code == (200 if who in allowed else 403), (who, r.status_code, r.text)
        if r.status_code == 403:
            assert r.json()["error"]["code"] == "forbidden"
    for who in (None, "expired", "revoked", "tsk_0123456789abcdef_" + "A" * 43, "' OR '1'='1"):
        r = call(server, who, method, path, json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), (who, r.text)


def test_model_list_shows_only_models_in_scope(server):
    names = lambda who: [m["name"] for m in call(server, who, "GET", "/v1/models").json()["models"]]  # noqa: E731
    assert names("admin") == ["digits", "iris"] and names("scoped") == ["digits"] and names("auditor") == []
    spec = call(server, "scoped", "GET", "/v1/models/digits").json()
    assert spec["input"] == {"shape": [8], "dtype": "float32", "min": 0.0, "max": 16.0}


@pytest.mark.parametrize("path", ["/v1/models/nope/predict", "/v1/models/%2A/predict",
                                  "/v1/models/digits%00/predict", "/v1/models/..%2E/predict"])
def test_unknown_models_404_only_for_callers_allowed_to_know(server, path):
    assert call(server, "admin", "POST", path, json={"inputs": X}).status_code == 404
    r = call(server, "scoped", "POST", path, json={"inputs": X})
    assert r.status_code == 403 and "nope" not in r.text


@pytest.mark.parametrize("path", ["/v1/models/..%2F..%2Fetc%2Fpasswd/predict", "/v1/models/a%2F..%2F..%2Fkeys",
                                  "/v1/models/digits/predict/..%2F..%2Fkeys"])
def test_path_tricks_reach_no_route(server, path):
    """Slashes (encoded or not) never reach a model name: every caller, with or without a key,
    gets the same route-level 404, so it says nothing about which models exist."""
    answers = {(r.status_code, r.text) for r in (call(server, w, "POST", path, json={"inputs": X})
                                                   for w in ("admin", "scoped", None))}
    assert len(answers) == 1 and next(iter(answers))[0] in (404, 405) and "passwd" not in next(iter(answers))[1]


def test_predict_contract(server):
    r = call(server, "scoped", "POST", "/v1/models/digits/predict", json={"inputs": X * 3})
    body = r.json()
    assert r.status_code == 200 and len(body["predictions"]) == 3 and len(body["outputs"]) == 3
    assert all(isinstance(p, int) and 0 <= p < 4 for p in body["predictions"])


@pytest.mark.parametrize("content,ctype,status", [
    (b"{not json", "application/json", 422),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 413),
    (b"[" * 20_000 + b"]" * 20_000, "application/json", 422),
    (json.dumps({"inputs": X}).encode(), "text/plain", 415),
    (json.dumps({"inputs": X}).encode(), "", 415),
    (json.dumps({"inputs": [["a"] * 8]}).encode(), "application/json", 422),
    (json.dumps({"inputs": [[1.0] * 9]}).encode(), "application/json", 422),
    (b'{"inputs": [[NaN, 1, 1, 1, 1, 1, 1, 1]]}', "application/json", 422),
    (json.dumps({"inputs": [[99.0] * 8]}).encode(), "application/json", 422),
    (json.dumps({"inputs": X * 65}).encode(), "application/json", 422),
    (b"x" * (70 * 1024), "application/json", 413),
])
def test_bad_input_gets_the_right_status(server, content, ctype, status):
    headers = {"Content-Type": ctype} if ctype else {}
    r = call(server, "scoped", "POST", "/v1/models/digits/predict", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["code"]


def test_errors_never_echo_secrets(server):
    client, toks, _ = server
    bad = toks["admin"][:-3] + "zzz"
    r = call(server, bad, "GET", "/v1/audit")
    assert r.status_code == 401 and bad not in r.text and toks["admin"][4:20] not in r.text
    r = client.get("/v1/audit", headers={"Authorization": "Bearer x\tSet-Cookie: a=b"})
    assert r.status_code == 401 and "set-cookie" not in r.headers


def test_revocation_over_http_is_immediate(server):
    r = call(server, "admin", "POST", "/v1/keys", json={"role": "predictor", "models": ["digits"], "expires": "1d"})
    assert r.status_code == 201
    token, key_id = r.json()["token"], r.json()["key"]["key_id"]
    assert call(server, token, "POST", "/v1/models/digits/predict", json={"inputs": X}).status_code == 200
    assert call(server, "scoped", "DELETE", f"/v1/keys/{key_id}").status_code == 403
    assert call(server, "admin", "DELETE", f"/v1/keys/{key_id}").json() == {"revoked": key_id}
    assert call(server, token, "POST", "/v1/models/digits/predict", json={"inputs": X}).status_code == 401
    assert call(server, "admin", "DELETE", "/v1/keys/ffffffffffffffff").status_code == 404


def test_owners_manage_predictor_keys_of_their_models_only(server):
    ok = call(server, "owner_digits", "POST", "/v1/keys", json={"role": "predictor", "models": ["digits"]})
    assert ok.status_code == 201
    for body in ({"role": "predictor", "models": ["iris"]}, {"role": "admin", "models": ["digits"]},
                 {"role": "predictor", "models": ["*"]}):
        assert call(server, "owner_digits", "POST", "/v1/keys", json=body).status_code == 403
    listed = call(server, "owner_digits", "GET", "/v1/keys").json()["keys"]
    assert listed and all(k["models"] == ["digits"] for k in listed)
    assert call(server, "predictor", "POST", "/v1/keys", json={"role": "predictor"}).status_code == 403


def test_rate_limit_gives_429_with_retry_after(server):
    r = call(server, "admin", "POST", "/v1/keys", json={"role": "predictor", "models": ["digits"],
                                                        "rate_per_s": 0.2, "burst": 2})
    token = r.json()["token"]
    codes = [call(server, token, "POST", "/v1/models/digits/predict", json={"inputs": X}) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert int(codes[2].headers["retry-after"]) >= 1


def test_every_request_has_exactly_one_audit_record(server):
    _, _, svc = server
    before = svc.audit.head()[0]
    statuses = [call(server, w, "POST", "/v1/models/digits/predict", json={"inputs": X}).status_code
                for w in ("scoped", "auditor", None, "scoped")]
    statuses.append(call(server, "scoped", "GET", "/no/such/route").status_code)
    records = call(server, "auditor", "GET", f"/v1/audit?after_seq={before}&limit=1000").json()["records"]
    mine = [r for r in records if r["action"] != "monitor.alert"][:5]
    assert [r["status"] for r in mine] == statuses == [200, 403, 401, 200, 404]
    assert all("tsk_" not in json.dumps(r) and r.get("body_digest") != json.dumps({"inputs": X}) for r in mine)
    assert mine[0]["key_id"] and mine[2]["key_id"] is None
    verify = call(server, "auditor", "GET", "/v1/audit/verify").json()
    assert verify["ok"] and verify["first_bad"] is None


def test_healthz_and_openapi(server):
    client, _, _ = server
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/models/{name}/predict", "/v1/keys", "/v1/audit/verify", "/metrics"} <= set(paths)


def test_metrics_are_prometheus_text(server):
    call(server, "scoped", "POST", "/v1/models/digits/predict", json={"inputs": X})
    text = call(server, "monitor", "GET", "/metrics").text
    assert "# TYPE torchshield_requests_total counter" in text
    assert 'torchshield_predictions_total{model="digits"}' in text and "torchshield_audit_head_seq" in text
