"""Who may do what: Casbin RBAC with models as domains, policies in the serving database.

A key holds a role in a domain: ``g, <key_id>, predictor, digits`` lets that key predict on
the model ``digits`` only; ``g, <key_id>, admin, *`` holds ``admin`` in every domain. Role
permissions are ``p`` rules valid in every domain the role is held (``p, predictor, *, model,
predict``). Requests about one model use the model's name as domain; service-wide requests
(audit, metrics, listing keys) use the domain ``*``, which only globally held roles reach.

The rules live in the table ``casbin_rule`` of the serving database through
``casbin_sqlalchemy_adapter`` (the maintained SQLAlchemy adapter of the Casbin project), so
``access`` on the CLI and ``/v1/keys`` on any worker change the same rules. Each worker keeps
an in-memory enforcer and reloads it when the database revision counter moves; decisions are
memoised per revision because Casbin's Python matcher costs tens of microseconds a call.

Threat model: a caller holding a valid key tries to act outside its role or model scope. The
enforcer denies by default (``some(where (p.eft == allow))``), and model names are matched
exactly, never as patterns, so a name like ``*`` or ``../x`` grants nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from torchshield.serve.policy import GLOBAL, ROLE_PERMISSIONS

__all__ = ["Authorizer", "GLOBAL", "ROLES", "create_policy_table", "default_policies", "grant_rows"]

ROLES = ROLE_PERMISSIONS  # the table of serve.policy, seeded into Casbin

_MODEL_CONF = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (g(r.sub, p.sub, r.dom) || g(r.sub, p.sub, "*")) && (p.dom == "*" || p.dom == r.dom) \
&& r.obj == p.obj && r.act == p.act
"""

def default_policies() -> list[list[str]]:
    return [[role, GLOBAL, obj, act] for role, perms in sorted(ROLES.items()) for obj, act in perms]


def create_policy_table(engine: Any) -> None:
    from casbin_sqlalchemy_adapter.adapter import Base

    Base.metadata.create_all(engine)


class Authorizer:
    """Casbin decisions for one worker, kept in step with the database revision."""

    def __init__(self, db: Any) -> None:
        import casbin
        from casbin_sqlalchemy_adapter import Adapter

        self._db = db
        # Casbin logs every decision; uvicorn's logging set-up re-enables its loggers, so quiet them
        # by level (decisions are in our audit log already).
        for name in ("casbin", "casbin.enforcer", "casbin.policy", "casbin.role"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._adapter = Adapter(db.write_engine, create_all_models=False)
        model = casbin.Enforcer.new_model(text=_MODEL_CONF)
        self._enforcer = casbin.Enforcer(model, self._adapter)
        self._lock = threading.Lock()
        self._revision = -1
        self._cache: dict[tuple[str, str, str, str], bool] = {}
        self.seed_defaults()

    def seed_defaults(self) -> None:
        """Insert the default role permissions once; existing (possibly edited) rules are kept."""
        import sqlalchemy as sa
        from casbin_sqlalchemy_adapter.adapter import CasbinRule

        with self._db.writing() as conn:
            have = conn.execute(sa.select(sa.func.count()).select_from(CasbinRule.__table__)
                                .where(CasbinRule.__table__.c.ptype == "p")).scalar_one()
            if have == 0:
                conn.execute(sa.insert(CasbinRule.__table__),
                             [dict(ptype="p", v0=r[0], v1=r[1], v2=r[2], v3=r[3]) for r in default_policies()])
                self._db.bump_revision(conn)

    def sync(self, revision: int) -> None:
        """Reload rules if another worker or the CLI changed them since the last request."""
        if revision == self._revision:
            return
        with self._lock:
            if revision != self._revision:
                self._enforcer.load_policy()
                self._cache = {}
                self._revision = revision

    @property
    def revision(self) -> int:
        """The policy revision loaded now (-1 before the first load)."""
        return self._revision

    def reload(self) -> None:
        """Load the rules now, whatever the revision."""
        self.sync(self._db.revision())

    def allowed(self, key_id: str, domain: str, obj: str, act: str) -> bool:
        q = (key_id, domain, obj, act)
        cache = self._cache  # a reload swaps the dict, so a decision computed before it is dropped
        hit = cache.get(q)
        if hit is None:
            with self._lock:
                hit = bool(self._enforcer.enforce(*q))
            cache[q] = hit
        return hit

    def holds_global_role(self, key_id: str) -> bool:
        """A key with a role in every domain may learn which models exist (404 vs 403)."""
        with self._lock:
            return bool(self._enforcer.get_roles_for_user_in_domain(key_id, GLOBAL))

    def role_table(self) -> dict[str, list[str]]:
        with self._lock:
            rules = self._enforcer.get_policy()
        out: dict[str, list[str]] = {}
        for sub, dom, obj, act in (r[:4] for r in rules):
            out.setdefault(sub, []).append(f"{obj}:{act}" + ("" if dom == GLOBAL else f"@{dom}"))
        return {k: sorted(v) for k, v in sorted(out.items())}


def grant_rows(key_id: str, role: str, models: list[str]) -> list[dict[str, str]]:
    """``g`` rows giving ``key_id`` the role ``role`` in each model domain (or ``*``)."""
    return [dict(ptype="g", v0=key_id, v1=role, v2=m) for m in models]
