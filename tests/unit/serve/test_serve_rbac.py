"""Casbin RBAC with models as domains: the role x action x scope matrix, and policy changes
reaching another worker through the database revision counter."""

from __future__ import annotations

import pytest

from torchshield.serve.access.keys import KeyStore
from torchshield.serve.rbac import GLOBAL, ROLES, Authorizer

ACTIONS = [("model", "read"), ("model", "predict"), ("keys", "manage"), ("audit", "read"), ("metrics", "read")]


@pytest.fixture
def setup(db, master_key):
    keys = KeyStore(db, master_key)
    authz = Authorizer(db)
    made = {role: keys.create(role=role).key.key_id for role in ROLES}
    made["scoped"] = keys.create(role="predictor", models=["digits"]).key.key_id
    made["owner_digits"] = keys.create(role="owner", models=["digits"]).key.key_id
    authz.sync(db.revision())
    return authz, made, keys


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("obj,act", ACTIONS)
def test_global_roles_match_their_permission_table(setup, role, obj, act):
    authz, made, _ = setup
    expected = (obj, act) in ROLES[role]
    domain = "digits" if obj == "model" else GLOBAL
    assert authz.allowed(made[role], domain, obj, act) is expected


def test_scoped_keys_reach_only_their_models(setup):
    authz, made, _ = setup
    assert authz.allowed(made["scoped"], "digits", "model", "predict")
    assert not authz.allowed(made["scoped"], "iris", "model", "predict")
    assert not authz.allowed(made["scoped"], GLOBAL, "model", "predict")
    assert authz.allowed(made["owner_digits"], "digits", "keys", "manage")
    assert not authz.allowed(made["owner_digits"], "iris", "keys", "manage")
    assert not authz.allowed(made["owner_digits"], GLOBAL, "keys", "manage")
    assert authz.holds_global_role(made["admin"]) and not authz.holds_global_role(made["scoped"])


@pytest.mark.parametrize("domain", ["*", "../digits", "digits*", "DIGITS", ""])
def test_domain_strings_grant_nothing_by_pattern(setup, domain):
    authz, made, _ = setup
    assert not authz.allowed(made["scoped"], domain, "model", "predict")


def test_unknown_key_gets_nothing(setup):
    authz, _, _ = setup
    assert not any(authz.allowed("0000000000000000", d, o, a) for d in ("digits", GLOBAL) for o, a in ACTIONS)


def test_second_worker_sees_grants_and_revocations(setup, db):
    authz, made, keys = setup
    other_worker = Authorizer(db)
    new = keys.create(role="predictor", models=["iris"]).key.key_id
    other_worker.sync(db.revision())
    assert other_worker.allowed(new, "iris", "model", "predict")
    keys.revoke(new)
    other_worker.sync(db.revision())
    assert not other_worker.allowed(new, "iris", "model", "predict")


def test_policies_live_in_the_database(setup, db):
    import sqlalchemy as sa
    from casbin_sqlalchemy_adapter.adapter import CasbinRule

    with db.reading() as conn:
        rows = conn.execute(sa.select(CasbinRule.__table__)).all()
    assert {("p", "auditor", "*", "audit", "read")} <= {(r.ptype, r.v0, r.v1, r.v2, r.v3) for r in rows}
    authz, made, _ = setup
    assert "audit:read" in authz.role_table()["auditor"]
