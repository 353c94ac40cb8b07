"""The gateway's policy: the ``data mask`` policy file, plus what only a gateway can do.

A ``data mask`` policy file works here unchanged: its ``entities`` and ``default`` operators are
applied to the request text exactly as ``data mask`` applies them to free text (same detector,
same ``min_score`` and ``types``, same keyed operators under the same master key). ``columns``,
``unlisted_columns``, ``person_key`` and ``hierarchies`` concern tables and are ignored here.

Two operator names exist only in the gateway, because only a gateway sees the answer come back:

* ``placeholder``: a typed placeholder such as ``<PERSON_1_qzkfmwxa>``, kept in the request's
  vault so that an allowed caller gets the original back in the answer (the default);
* ``refuse``: the whole request is refused (:class:`~torchshield.gateway.errors.InputRefused`).

``pseudonymize`` pseudonyms are also kept in the vault and re-identified for allowed callers;
every other operator (``replace``, ``mask``, ``hash``, ...) is one-way in the gateway.

An optional ``gateway`` section holds the serving settings::

    version: 1
    default: placeholder
    entities:
      CN_RESIDENT_ID: refuse
      PERSON: {operator: pseudonymize}
      EMAIL: {operator: mask, keep_last: 4}
    gateway:
      max_chars: 32768     # longer requests are refused (HTTP 413)
      on_leak: mask        # PII in an answer that was not in the request: mask | block | flag
      vault_ttl_s: 0       # > 0: a conversation's vault is kept sealed this long between turns
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchshield.data.anonymize import Operator, Policy, load_policy
from torchshield.errors import InputError

__all__ = ["GATEWAY_OPERATORS", "LEAK_ACTIONS", "GatewayPolicy", "load_gateway_policy"]

GATEWAY_OPERATORS = frozenset({"placeholder", "refuse"})
LEAK_ACTIONS = frozenset({"mask", "block", "flag"})
DEFAULT_MAX_CHARS = 32_768
_GATEWAY_FIELDS = frozenset({"max_chars", "on_leak", "vault_ttl_s"})


@dataclass(frozen=True)
class GatewayPolicy:
    """A validated policy. ``action_for(type)`` is ``"placeholder"``, ``"refuse"`` or an Operator."""

    base: Policy
    gateway_ops: Mapping[str, str]
    default_op: str | None
    max_chars: int = DEFAULT_MAX_CHARS
    on_leak: str = "mask"
    vault_ttl_s: float = 0.0

    @property
    def min_score(self) -> float:
        return self.base.min_score

    @property
    def types(self) -> frozenset[str] | None:
        return self.base.types

    @property
    def needs_key(self) -> bool:
        return self.base.needs_key

    def with_settings(self, **settings: Any) -> GatewayPolicy:
        """A copy with ``gateway`` section fields replaced (validated as in a file)."""
        return dataclasses.replace(self, **_section(settings, "gateway settings"))

    def action_for(self, entity: str) -> str | Operator:
        if entity in self.gateway_ops:
            return self.gateway_ops[entity]
        if entity in self.base.entities:
            return self.base.entities[entity]
        if self.default_op is not None:
            return self.default_op
        return self.base.operator_for(entity)


def load_gateway_policy(source: str | Path | Mapping[str, Any] | GatewayPolicy | None, *,
                        name: str | None = None) -> GatewayPolicy:
    """Parse and validate a policy from a YAML path, a dict, or None (placeholders for every type).

    Every mistake is an ``InputError`` naming the file and the field, as for ``data mask``."""
    if isinstance(source, GatewayPolicy):
        return source
    if source is None:
        raw: Any = {"version": 1, "default": "placeholder"}
        where = name or "default gateway policy"
    elif isinstance(source, Mapping):
        raw, where = copy.deepcopy(dict(source)), name or "policy"
    else:
        path = Path(source)
        where = name or str(path)
        raw = _read_yaml(path)
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: the policy must be a mapping at the top level")
    raw = dict(raw)
    section = raw.pop("gateway", None) or {}
    if not isinstance(section, Mapping):
        raise InputError(f"{where}: gateway: must be a mapping", hint=f"fields: {', '.join(sorted(_GATEWAY_FIELDS))}")
    gateway_ops: dict[str, str] = {}
    default_op = _take_gateway_op(raw, "default", where)
    ents = raw.get("entities")
    if isinstance(ents, Mapping):
        ents = dict(ents)
        for etype in list(ents):
            op = _gateway_op_name(ents[etype], f"{where}: entities.{etype}")
            if op is not None:
                gateway_ops[str(etype)] = op
                ents[etype] = "keep"  # validated by load_policy (the type name), applied by the gateway
        raw["entities"] = ents
    base = load_policy(raw, name=where)
    return GatewayPolicy(base=base, gateway_ops=gateway_ops, default_op=default_op, **_section(section, where))


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"policy file {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({type(exc).__name__})", hint="check indentation and quoting") from None


def _gateway_op_name(spec: Any, where: str) -> str | None:
    name = spec if isinstance(spec, str) else spec.get("operator") if isinstance(spec, Mapping) else None
    if name not in GATEWAY_OPERATORS:
        return None
    if isinstance(spec, Mapping) and set(spec) != {"operator"}:
        extra = sorted(set(spec) - {"operator"})
        raise InputError(f"{where}: unknown option(s) {', '.join(map(str, extra))} for operator '{name}'",
                         hint="allowed: none")
    return str(name)


def _take_gateway_op(raw: dict[str, Any], key: str, where: str) -> str | None:
    op = _gateway_op_name(raw.get(key), f"{where}: {key}")
    if op is not None:
        raw[key] = "keep"
    return op


def _section(section: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = set(section) - _GATEWAY_FIELDS
    if unknown:
        raise InputError(f"{where}: gateway.{sorted(map(str, unknown))[0]}: unknown field",
                         hint=f"known: {', '.join(sorted(_GATEWAY_FIELDS))}")
    out: dict[str, Any] = {}
    if "max_chars" in section:
        v = section["max_chars"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{where}: gateway.max_chars: must be a positive integer")
        out["max_chars"] = v
    if "on_leak" in section:
        v = section["on_leak"]
        if v not in LEAK_ACTIONS:
            raise InputError(f"{where}: gateway.on_leak: must be one of {', '.join(sorted(LEAK_ACTIONS))}")
        out["on_leak"] = v
    if "vault_ttl_s" in section:
        v = section["vault_ttl_s"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 86_400:
            raise InputError(f"{where}: gateway.vault_ttl_s: must be a number of seconds in [0, 86400]")
        out["vault_ttl_s"] = float(v)
    return out
