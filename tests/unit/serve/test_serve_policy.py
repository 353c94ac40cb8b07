"""The role x scope x action table of serve/policy.py is what the service enforces: for random
principals and requests (Hypothesis, derandomized), the service's answers equal an independent
reading of the table, and no manager can create a key that reaches further than its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchshield.errors import AccessDenied
from torchshield.serve.policy import CREATES, GLOBAL, ROLE_PERMISSIONS, markdown_table

MODELS = ["digits", "iris", "mnist"]
ROLES = sorted(ROLE_PERMISSIONS)
scopes = st.one_of(st.just((GLOBAL,)), st.sets(st.sampled_from(MODELS), min_size=1).map(lambda s: tuple(sorted(s))))
principals = st.tuples(st.sampled_from(ROLES), scopes)


def reach(role: str, scope: tuple[str, ...]) -> set[tuple[str, str, str]]:
    """Everything a key of ``role`` within ``scope`` may do, spelled out as (domain, object,
    action) over a finite world of models plus the service-wide domain: written from the table's
    data alone, not from serve.policy's functions."""
    domains = set(MODELS) | {GLOBAL} if GLOBAL in scope else set(scope)
    out = set()
    for obj, act in ROLE_PERMISSIONS[role]:
        for dom in domains:
            if obj in ("audit", "metrics") and dom != GLOBAL:
                continue
            out.add((dom, obj, act))
    return out


def table_may_create(role, scope, new_role, new_scope) -> bool:
    return new_role in CREATES[role] and reach(new_role, new_scope) <= reach(role, scope) and (
        GLOBAL in scope or GLOBAL not in new_scope) and set(new_scope) - {GLOBAL} <= (
        set(MODELS) if GLOBAL in scope else set(scope))


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    from serve_harness import make_service

    from torchshield.crypto.keys import generate_master_key

    service = make_service(tmp_path_factory.mktemp("policy"), generate_master_key(), models=tuple(MODELS),
                           rate_per_s=1e6, burst=10**6)
    yield service
    service.close()


_made: dict = {}


def key_for(svc, role, scope):
    """One key per principal (created once: the database stays small)."""
    if (role, scope) not in _made:
        _made[(role, scope)] = svc.keys.create(role=role, models=list(scope))
    return _made[(role, scope)]


REQUESTS = st.one_of(
    st.tuples(st.sampled_from(["model.read", "model.predict", "pii.reidentify"]), st.sampled_from(MODELS)),
    st.tuples(st.sampled_from(["audit.read", "metrics.read"]), st.just(GLOBAL)),
)


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(principal=principals, request=REQUESTS)
def test_service_checks_equal_the_table(svc, principal, request):
    role, scope = principal
    action, domain = request
    obj, act = action.split(".")
    d = svc.check(key_for(svc, role, scope).token, domain, obj, act)
    assert d.allowed == ((domain, obj, act) in reach(role, scope)), (principal, request, d)
    if not d.allowed:
        assert d.status == 403
    if action == "pii.reidentify":  # what the privacy gateway asks: the same table, the same answer
        key = svc.keys.authenticate(key_for(svc, role, scope).token)
        assert svc.may_see_pii(key, domain) == ((domain, obj, act) in reach(role, scope))


def test_who_sees_pii_owner_and_admin_in_scope_never_a_predictor(svc):
    from torchshield.serve.policy import Scope, may

    assert may("owner", Scope.of(["iris"]), "pii.reidentify", "iris")
    assert not may("owner", Scope.of(["iris"]), "pii.reidentify", "digits")
    assert may("admin", Scope.of([GLOBAL]), "pii.reidentify", "digits")
    for role in ("predictor", "auditor", "monitor"):
        assert not may(role, Scope.of([GLOBAL]), "pii.reidentify", "digits")


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(principal=principals, new_role=st.sampled_from(ROLES), new_scope=scopes)
def test_key_management_equals_the_table_and_never_widens(svc, principal, new_role, new_scope):
    role, scope = principal
    manager = key_for(svc, role, scope).key
    expected = table_may_create(role, scope, new_role, new_scope)
    try:
        svc.authorize_new_key(manager, new_role, list(new_scope))
        allowed = True
    except AccessDenied:
        allowed = False
    assert allowed == expected, (principal, new_role, new_scope)
    assert svc.may_manage(manager, new_role, new_scope) == expected  # list and revoke: the same rule
    if allowed:  # what the new key can do through Casbin, the creator can do too
        new = key_for(svc, new_role, new_scope)
        for dom in [*MODELS, GLOBAL]:
            for obj, act in {p for perms in ROLE_PERMISSIONS.values() for p in perms}:
                if svc.authz.allowed(new.key.key_id, dom, obj, act):
                    assert svc.authz.allowed(manager.key_id, dom, obj, act), (principal, new_role, dom, obj, act)


def test_empty_scope_is_never_every_model(svc):
    from torchshield.errors import InputError

    with pytest.raises(InputError, match="models:"):
        svc.keys.create(role="predictor", models=[])
    admin = key_for(svc, "admin", (GLOBAL,)).key
    with pytest.raises(AccessDenied):
        svc.authorize_new_key(admin, "predictor", [])


def test_docs_hold_the_table_verbatim():
    page = (Path(__file__).resolve().parents[3] / "docs" / "serving.md").read_text()
    m = re.search(r"<!-- policy-table:begin[^>]*-->\n(.*?)\n<!-- policy-table:end -->", page, re.S)
    assert m, "docs/serving.md lost its policy table markers"
    assert m.group(1) == markdown_table(), "regenerate with: python -m torchshield.serve.policy"
