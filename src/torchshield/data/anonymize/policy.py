"""The de-identification policy: which operator applies to which column and entity type.

A policy is YAML (or a dict)::

    version: 1
    min_score: 0.5                 # detector threshold for free text
    default: {operator: replace}   # entity types with no rule of their own
    entities:
      PERSON: {operator: pseudonymize}
      CN_MOBILE: {operator: mask, keep_first: 3, keep_last: 4}
    columns:
      姓名: {operator: pseudonymize, type: PERSON}
      身份证号: {operator: encrypt}
      年龄: {operator: generalize, width: 10}
      病历: scan                   # find PII inside the text, apply the entity rules
      内部编号: {operator: suppress, drop: true}
    unlisted_columns: scan         # or keep
    person_key: 身份证号            # whose dates date_shift moves together
    hierarchies:                   # category trees for `data kanon --policy`
      region: {"310104": 上海, "310105": 上海, 上海: 中国}

Every field is checked on load; an error names the file and the field (exit 2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchshield.data.anonymize.operators import Operator, make_operator, operator_spec
from torchshield.errors import InputError

__all__ = ["DEFAULT_POLICY", "ColumnRule", "Policy", "load_policy"]

DEFAULT_POLICY: dict[str, Any] = {
    "version": 1,
    "min_score": 0.5,
    "default": {"operator": "replace"},
    "entities": {},
    "columns": {},
    "unlisted_columns": "scan",
}
_TOP = {"version", "min_score", "default", "entities", "columns", "unlisted_columns", "person_key", "types",
        "hierarchies"}


@dataclass
class ColumnRule:
    """``scan`` (find PII inside) or an operator for the whole cell; ``drop`` removes the column."""

    scan: bool = False
    operator: Operator | None = None
    entity: str | None = None
    drop: bool = False


@dataclass
class Policy:
    raw: dict[str, Any]
    min_score: float = 0.5
    default: Operator | None = None
    entities: dict[str, Operator] = field(default_factory=dict)
    columns: dict[str, ColumnRule] = field(default_factory=dict)
    unlisted_scan: bool = True
    person_key: str | None = None
    types: frozenset[str] | None = None
    hierarchies: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def needs_key(self) -> bool:
        ops = [self.default, *self.entities.values(), *(c.operator for c in self.columns.values())]
        return any(o is not None and o.needs_key for o in ops)

    def operator_for(self, entity: str) -> Operator:
        op = self.entities.get(entity, self.default)
        assert op is not None
        return op

    def check_columns(self, columns: list[str], *, source: str = "policy") -> None:
        """A policy naming a column the table lacks is a mistake (typo, wrong file): refuse."""
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise InputError(f"{source}: columns.{missing[0]}: no such column in the input",
                             hint=f"input columns: {', '.join(map(str, columns))}")
        if self.person_key is not None and self.person_key not in columns:
            raise InputError(f"{source}: person_key: no column {self.person_key!r} in the input")


def load_policy(source: str | Path | Mapping[str, Any] | None, *, name: str | None = None) -> Policy:
    """Parse and validate a policy from a YAML path, a dict, or None (the default policy)."""
    import yaml

    where = name or "policy"
    if source is None:
        raw: Any = DEFAULT_POLICY
        where = "default policy"
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        where = name or str(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"policy file {path} does not exist") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid YAML ({type(exc).__name__})",
                             hint="check indentation and quoting") from None
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: the policy must be a mapping at the top level")
    return _parse(dict(raw), where)


def _parse(raw: dict[str, Any], where: str) -> Policy:
    from torchshield.data.pii import get_registry

    unknown = set(raw) - _TOP
    if unknown:
        raise InputError(f"{where}: {sorted(unknown)[0]}: unknown field", hint=f"known: {', '.join(sorted(_TOP))}")
    if raw.get("version", 1) != 1:
        raise InputError(f"{where}: version: unsupported policy version {raw.get('version')!r}", hint="use 1")
    ms = raw.get("min_score", 0.5)
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not 0 <= ms <= 1:
        raise InputError(f"{where}: min_score: must be a number in [0, 1]")
    known_types = get_registry().entity_types
    policy = Policy(raw=raw, min_score=float(ms))
    policy.default = make_operator(raw.get("default", {"operator": "replace"}), where=f"{where}: default")
    ents = raw.get("entities") or {}
    if not isinstance(ents, Mapping):
        raise InputError(f"{where}: entities: must be a mapping of entity type to operator")
    for etype, spec in ents.items():
        if etype not in known_types:
            raise InputError(f"{where}: entities.{etype}: unknown entity type",
                             hint=f"known: {', '.join(sorted(known_types))}")
        policy.entities[etype] = make_operator(spec, where=f"{where}: entities.{etype}")
    cols = raw.get("columns") or {}
    if not isinstance(cols, Mapping):
        raise InputError(f"{where}: columns: must be a mapping of column name to rule")
    for col, spec in cols.items():
        policy.columns[str(col)] = _column_rule(spec, f"{where}: columns.{col}", known_types)
    unlisted = raw.get("unlisted_columns", "scan")
    if unlisted not in ("scan", "keep"):
        raise InputError(f"{where}: unlisted_columns: must be 'scan' or 'keep'")
    policy.unlisted_scan = unlisted == "scan"
    pk = raw.get("person_key")
    if pk is not None and not isinstance(pk, str):
        raise InputError(f"{where}: person_key: must be a column name")
    policy.person_key = pk
    types = raw.get("types")
    if types is not None:
        if not isinstance(types, list) or any(t not in known_types for t in types):
            raise InputError(f"{where}: types: must be a list of known entity types")
        policy.types = frozenset(types)
    hier = raw.get("hierarchies") or {}
    if not isinstance(hier, Mapping) or not all(isinstance(v, Mapping) for v in hier.values()):
        raise InputError(f"{where}: hierarchies: expected {{column: {{value: parent, ...}}}}")
    policy.hierarchies = {str(c): {str(a): str(b) for a, b in m.items()} for c, m in hier.items()}
    return policy


def _column_rule(spec: Any, where: str, known_types: frozenset[str]) -> ColumnRule:
    if spec == "scan" or (isinstance(spec, Mapping) and spec.get("operator") == "scan"):
        return ColumnRule(scan=True)
    opts = operator_spec(spec, where=where)
    entity = opts.pop("type", None)
    if entity is not None and entity not in known_types:
        raise InputError(f"{where}.type: unknown entity type {entity!r}")
    drop = bool(opts.get("drop", False))
    op = make_operator(opts, where=where)
    if op.name == "pseudonymize" and entity is not None:
        op.options.setdefault("type", entity)
    return ColumnRule(operator=op, entity=entity, drop=drop)
