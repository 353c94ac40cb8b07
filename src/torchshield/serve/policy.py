"""Who may do what, written once: the role x scope x action table of the inference service.

Every key holds one **role** within one **scope**: either every model (``*``) or a list of
model names. The table below is the only place the rules are written; the Casbin policies
(:mod:`torchshield.serve.rbac`) are seeded from :data:`ROLE_PERMISSIONS`, key management
(``/v1/keys``) asks :func:`may_manage`, and the table in ``docs/serving.md`` is
:func:`markdown_table` (a test keeps the two equal).

Threat model: a caller holding a valid key tries to act outside its role or scope, in
particular to mint a key that reaches further than its own. The rule that stops it:

- a manager creates, lists and revokes only keys whose role it may create
  (:data:`CREATES`: an admin any role, an owner predictor keys only, nobody else any) **and**
  whose scope lies within its own (:meth:`Scope.covers`); an empty model list is not "every
  model", it is refused as bad input.

So a manager can never create a key with more permissions or a wider scope than its own
(``tests/unit/serve/test_serve_policy.py`` checks this for random principals and requests).
Service-wide actions (reading the audit log or the metrics, listing every key) need the
global scope ``*``: a role held for some models only reaches those models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ACTIONS", "CREATES", "GLOBAL", "ROLE_PERMISSIONS", "SERVICE_WIDE", "Scope", "markdown_table", "may",
           "may_manage", "role_names"]

GLOBAL = "*"

# role -> the (object, action) pairs it holds within its scope
ROLE_PERMISSIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "admin": (("model", "read"), ("model", "predict"), ("pii", "reidentify"), ("keys", "manage"),
              ("audit", "read"), ("metrics", "read")),
    "auditor": (("audit", "read"),),
    "monitor": (("metrics", "read"),),
    "owner": (("model", "read"), ("model", "predict"), ("pii", "reidentify"), ("keys", "manage")),
    "predictor": (("model", "read"), ("model", "predict")),
}

# role -> the roles of the keys it may create, list and revoke (within its scope)
CREATES: dict[str, frozenset[str]] = {
    "admin": frozenset(ROLE_PERMISSIONS),
    "auditor": frozenset(),
    "monitor": frozenset(),
    "owner": frozenset({"predictor"}),
    "predictor": frozenset(),
}

# The actions a request can ask for, as "object.action"; the key actions all follow CREATES.
# pii.reidentify: with --privacy-policy, a text answer comes back with the caller's own PII in place
# of the gateway's placeholders (otherwise the placeholder text); per model, within the scope.
ACTIONS = ("model.read", "model.predict", "pii.reidentify", "keys.create", "keys.list", "keys.revoke", "audit.read", "metrics.read")
# Objects that are not one model's: reached only with the global scope.
SERVICE_WIDE = frozenset({"audit", "metrics"})


def _check_table() -> None:
    """The table is consistent: whoever creates keys holds keys:manage, and creates nothing it
    could not do itself (every created role's permissions are the creator's)."""
    for role, made in CREATES.items():
        if bool(made) != (("keys", "manage") in ROLE_PERMISSIONS[role]) or any(
                not set(ROLE_PERMISSIONS[other]) <= set(ROLE_PERMISSIONS[role]) for other in made):
            raise RuntimeError(f"the policy table lets role {role!r} create more than it holds")


_check_table()


def role_names() -> list[str]:
    return sorted(ROLE_PERMISSIONS)


@dataclass(frozen=True)
class Scope:
    """The models a key reaches: every model (``*``) or the named ones (never empty)."""

    models: frozenset[str]

    @classmethod
    def of(cls, models: Iterable[str]) -> Scope:
        return cls(frozenset(models))

    @property
    def is_global(self) -> bool:
        return GLOBAL in self.models

    def includes(self, model: str) -> bool:
        return self.is_global or model in self.models

    def covers(self, other: Scope) -> bool:
        """Whether every model ``other`` reaches is one this scope reaches (and ``other`` is not
        empty: an empty scope is malformed, never "everything")."""
        if not other.models:
            return False
        return self.is_global or (not other.is_global and other.models <= self.models)


def may(role: str, scope: Scope, action: str, model: str | None = None) -> bool:
    """Whether a key of ``role`` within ``scope`` may do ``action`` ("model.predict", ...) on
    ``model`` (None: service-wide). Key actions: see :func:`may_manage`."""
    obj, _, act = action.partition(".")
    if obj == "keys":
        return bool(CREATES.get(role))  # reaching /v1/keys at all; each key is then checked
    if (obj, act) not in ROLE_PERMISSIONS.get(role, ()):
        return False
    if model is None or obj in SERVICE_WIDE:
        return scope.is_global
    return scope.includes(model)


def may_manage(role: str, scope: Scope, target_role: str, target_scope: Scope) -> bool:
    """Whether a key of ``role`` within ``scope`` may create, list or revoke a key of
    ``target_role`` within ``target_scope``."""
    return target_role in CREATES.get(role, frozenset()) and scope.covers(target_scope)


def markdown_table() -> str:
    """The table as Markdown, for docs/serving.md (a test checks the page holds it verbatim)."""
    head = ["role", *ACTIONS[:3], "audit.read", "metrics.read", "creates keys of role"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for role in role_names():
        perms = ROLE_PERMISSIONS[role]
        cells = ["in scope" if tuple(a.split(".")) in perms else "-" for a in ACTIONS[:3]]
        cells += ["scope `*` only" if (o, "read") in perms else "-" for o in ("audit", "metrics")]
        cells.append(", ".join(sorted(CREATES[role])) + " (within its scope)" if CREATES[role] else "-")
        rows.append("| " + " | ".join([f"`{role}`", *cells]) + " |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m torchshield.serve.policy: the table for docs/serving.md
    print(markdown_table())
