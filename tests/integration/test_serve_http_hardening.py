"""Regression tests for issue 17 (findings 1-4 and 9), against a real server on a loopback port:
key creation can never widen a scope or a role, every field of every body and query is type-
and range-checked (422 naming the field, no CLI flag in the message), an unexpected exception is
a JSON 500 with its audit record, and policy refusals travel as errors.AccessDenied."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_harness import make_service, running

X = [[1.0] * 8]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app

    tmp = tmp_path_factory.mktemp("serve")
    svc = make_service(tmp, generate_master_key(), rate_per_s=1000, burst=1000)
    toks = {"admin": svc.keys.create(role="admin").token,
            "owner_all": svc.keys.create(role="owner").token,  # what `access create-key --role owner` makes
            "owner_digits": svc.keys.create(role="owner", models=["digits"]).token,
            "admin_digits": svc.keys.create(role="admin", models=["digits"]).token,
            "auditor": svc.keys.create(role="auditor").token}
    with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, toks, svc


def call(server, who, method, path, **kw):
    client, toks, _ = server
    headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {toks.get(who, who)}"}
    return client.request(method, path, headers=headers, **kw)


def one_record_each(server, requests):
    """Run ``requests`` (who, method, path, kwargs) one by one; each must add exactly one audit
    record, with the status it answered. Returns the responses."""
    _, _, svc = server
    out = []
    for who, method, path, kw in requests:
        before = svc.audit.head()[0]
        r = call(server, who, method, path, **kw)
        after = svc.audit.head()[0]
        recs = [x for x in svc.audit.records(after_seq=before) if x["action"] != "monitor.alert"]
        assert after - before == len(recs) + sum(1 for x in svc.audit.records(after_seq=before)
                                                 if x["action"] == "monitor.alert"), (path, kw)
        assert [x["status"] for x in recs] == [r.status_code], (path, kw, r.text)
        out.append(r)
    return out


# ---- findings 1 and 2: no key reaches further than its creator ---------------------------------
@pytest.mark.parametrize("who", ["owner_digits", "admin_digits"])
def test_scoped_manager_cannot_mint_a_key_for_every_model(server, who):
    r = call(server, who, "POST", "/v1/keys", json={"role": "predictor", "models": []})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("models:"), r.text
    for body in ({"role": "predictor"}, {"role": "predictor", "models": ["*"]},
                 {"role": "predictor", "models": ["digits", "iris"]}):
        r = call(server, who, "POST", "/v1/keys", json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (body, r.text)
    ok = call(server, who, "POST", "/v1/keys", json={"role": "predictor", "models": ["digits"]})
    assert ok.status_code == 201
    token = ok.json()["token"]
    assert call(server, token, "POST", "/v1/models/iris/predict", json={"inputs": X}).status_code == 403


@pytest.mark.parametrize("role", ["admin", "owner", "auditor", "monitor"])
def test_global_owner_creates_predictor_keys_only(server, role):
    r = call(server, "owner_all", "POST", "/v1/keys", json={"role": role, "models": ["*"]})
    assert r.status_code == 403, r.text
    assert call(server, "owner_all", "POST", "/v1/keys", json={"role": "predictor"}).status_code == 201


def test_owner_lists_and_revokes_only_what_it_may_create(server):
    listed = call(server, "owner_all", "GET", "/v1/keys").json()["keys"]
    assert listed and {k["role"] for k in listed} == {"predictor"}
    _, toks, svc = server
    admin_id = svc.keys.authenticate(toks["admin"]).key_id
    assert call(server, "owner_all", "DELETE", f"/v1/keys/{admin_id}").status_code == 403
    assert svc.keys.authenticate(toks["admin"]) is not None


# ---- findings 3, 4 and 9: every field validated, 422 naming it, one record each ---------------
BAD_BODIES = [
    ({"role": "predictor", "models": ["digits"], "expires": 30}, "expires"),
    ({"role": "predictor", "models": ["digits"], "expires": ["1d"]}, "expires"),
    ({"role": "predictor", "models": ["digits"], "expires": "forever"}, "expires"),
    ({"role": "predictor", "models": ["digits"], "rate_per_s": "5"}, "rate_per_s"),
    ({"role": "predictor", "models": ["digits"], "rate_per_s": -1}, "rate_per_s"),
    ({"role": "predictor", "models": ["digits"], "burst": "x"}, "burst"),
    ({"role": "predictor", "models": ["digits"], "burst": [1]}, "burst"),
    ({"role": "predictor", "models": ["digits"], "burst": 1.5}, "burst"),
    ({"role": "predictor", "models": ["digits"], "burst": 0}, "burst"),
    ({"role": "predictor", "models": ["digits"], "name": 7}, "name"),
    ({"role": "bogus"}, "role"),
    ({"role": ["admin"]}, "role"),
    ({"role": "predictor", "models": "digits"}, "models"),
    ({"role": "predictor", "models": ["../x"]}, "models"),
    ({"role": "predictor", "models": ["*", "digits"]}, "models"),
    ({"role": "predictor", "models": ["digits"], "admin": True}, "admin"),
    ({}, "role"),
]


@pytest.mark.parametrize("body,field", BAD_BODIES, ids=[f for _, f in BAD_BODIES])
def test_bad_key_fields_are_422_naming_the_field(server, body, field):
    _, _, svc = server
    keys_before = svc.keys.count()
    (r,) = one_record_each(server, [("admin", "POST", "/v1/keys", {"json": body})])
    assert r.status_code == 422, r.text
    msg = r.json()["error"]["message"]
    assert msg.startswith(f"{field}:") and "--" not in msg, msg
    assert svc.keys.count() == keys_before


@pytest.mark.parametrize("raw", [b'{"role": "predictor", "models": ["digits"], "rate_per_s": 1e400}',
                                 b'{"role": "predictor", "models": ["digits"], "rate_per_s": 1e7}'],
                         ids=["inf", "huge"])
def test_infinite_or_huge_rate_creates_no_key(server, raw):
    _, _, svc = server
    keys_before = svc.keys.count()
    (r,) = one_record_each(server, [("admin", "POST", "/v1/keys",
                                     {"content": raw, "headers": {"Content-Type": "application/json"}})])
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("rate_per_s:"), r.text
    assert svc.keys.count() == keys_before


def test_a_burst_string_never_poisons_a_key(server):
    r = call(server, "admin", "POST", "/v1/keys", json={"role": "predictor", "models": ["digits"], "burst": 3})
    assert r.status_code == 201 and r.json()["key"]["burst"] == 3
    assert call(server, r.json()["token"], "POST", "/v1/models/digits/predict", json={"inputs": X}).status_code == 200


@pytest.mark.parametrize("query,field", [("after_seq=" + "9" * 23, "after_seq"), ("after_seq=-1", "after_seq"),
                                         ("after_seq=x", "after_seq"), ("limit=0", "limit"),
                                         ("limit=100000", "limit"), ("since=yesterday", "since")])
def test_bad_audit_queries_are_422_naming_the_field(server, query, field):
    (r,) = one_record_each(server, [("auditor", "GET", f"/v1/audit?{query}", {})])
    assert r.status_code == 422 and r.json()["error"]["message"].startswith(f"{field}:"), r.text
    _, _, svc = server
    rec = svc.audit.records(after_seq=svc.audit.head()[0] - 1)[-1]
    assert rec["route"] == "/v1/audit" and rec["reason"].startswith(f"{field}:")


def test_unexpected_exception_is_a_json_500_with_its_record(server, monkeypatch):
    _, _, svc = server

    def broken(*a, **k):
        raise RuntimeError("boom: a bug, with a detail that must not leak")

    monkeypatch.setattr(svc.keys, "list", broken)
    (r,) = one_record_each(server, [("admin", "GET", "/v1/keys", {})])
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "boom" not in r.text
    rec = svc.audit.records(after_seq=svc.audit.head()[0] - 1)[-1]
    assert rec["status"] == 500 and "RuntimeError" in rec["reason"]
    assert svc.audit.verify().ok


def test_policy_refusals_are_access_denied(server):
    from torchshield.errors import AccessDenied

    _, toks, svc = server
    owner = svc.keys.authenticate(toks["owner_digits"])
    with pytest.raises(AccessDenied):
        svc.authorize_new_key(owner, "admin", ["digits"])
    r = call(server, "owner_digits", "POST", "/v1/keys", json={"role": "admin", "models": ["digits"]})
    assert r.status_code == 403 and "--" not in json.dumps(r.json())
