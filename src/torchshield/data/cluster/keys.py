"""What a worker gets instead of the master key: the policy's subkeys, derived on the driver.

Threat model: a cluster's executors, its shuffle and broadcast files and its task closures are
seen by more people and machines than the data owner's driver. So the master key never leaves the
driver: for a policy we derive, once, only the purpose-bound HKDF subkeys its keyed operators use
(``data/keyed-hash``, ``data/deterministic-encryption``, ``data/pseudonym``, ``data/date-shift``;
see ``torchshield.crypto.labels``) and ship those, and only those, in the engine's broadcast.
A worker that leaks them exposes this policy's tokens, not every other key the master derives
(bundle keys, store keys, audit keys). The operators are unchanged: ``SubkeySet`` stands where a
``MasterKey`` stands (``derive(label, length)``), so the per-row code is the single-process code
and its output is identical."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchshield.data.anonymize import OPERATORS, Policy
from torchshield.errors import KeyMaterialError

__all__ = ["OPERATOR_SUBKEYS", "SubkeySet", "keyed_operators", "policy_subkeys"]

# The (label, length) each keyed operator asks its KeyedContext for (data/anonymize/operators.py).
# A test fails when a keyed operator is added without its entry here.
OPERATOR_SUBKEYS: dict[str, tuple[tuple[str, int], ...]] = {
    "hash": (("data/keyed-hash", 32),),
    "encrypt": (("data/deterministic-encryption", 64),),
    "pseudonymize": (("data/pseudonym", 32),),
    "date_shift": (("data/date-shift", 32),),
}


@dataclass(frozen=True)
class SubkeySet:
    """Only the subkeys one policy needs, by (label, length); ``repr`` never shows them."""

    keys: Mapping[tuple[str, int], bytes] = field(repr=False)

    def derive(self, label: str, length: int = 32) -> bytes:
        try:
            return self.keys[(label, length)]
        except KeyError:
            raise KeyMaterialError(f"subkey {label!r} was not derived for this policy",
                                   hint="derive the subkeys from the policy that runs (policy_subkeys)") from None

    @property
    def labels(self) -> list[str]:
        return sorted(label for label, _ in self.keys)


def policy_subkeys(policy: Policy, master: Any | None) -> SubkeySet | None:
    """The subkeys ``policy``'s keyed operators use, derived from ``master`` (None when the policy
    has no keyed operator, or no key was given: the Anonymizer already refuses that case)."""
    if master is None:
        return None
    ops = [policy.default, *policy.entities.values(), *(c.operator for c in policy.columns.values())]
    wanted: set[tuple[str, int]] = set()
    for op in ops:
        if op is None or not op.needs_key:
            continue
        if op.name not in OPERATOR_SUBKEYS:
            raise KeyMaterialError(f"operator '{op.name}' has no subkey entry for distributed runs",
                                   hint="add it to torchshield.data.cluster.keys.OPERATOR_SUBKEYS")
        wanted.update(OPERATOR_SUBKEYS[op.name])
    return SubkeySet({lk: master.derive(*lk) for lk in sorted(wanted)}) if wanted else None


def keyed_operators() -> list[str]:
    """Names of the registered operators that need a key (for the completeness test)."""
    return sorted(name for name, cls in OPERATORS.items() if cls.needs_key)
