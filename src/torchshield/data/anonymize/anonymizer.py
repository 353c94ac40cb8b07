"""Apply a policy to text, records and DataFrames, counting what changed (never what it was)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from torchshield.data.anonymize.operators import Cell, KeyedContext
from torchshield.data.anonymize.policy import Policy, load_policy
from torchshield.data.dtypes import is_text as _is_text
from torchshield.errors import KeyMaterialError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Anonymizer", "anonymize_text"]


class Anonymizer:
    """Holds a validated policy and the keyed context; reusable across chunks of one table.

    ``counts`` accumulates ``{column: {entity_or_operator: n}}`` for the report."""

    def __init__(self, policy: Policy | None = None, *, key: Any | None = None) -> None:
        self.policy = policy if policy is not None else load_policy(None)
        if self.policy.needs_key and key is None:
            raise KeyMaterialError("the policy uses keyed operators (hash, encrypt, pseudonymize, date_shift) "
                                   "but no key was given",
                                   hint="pass --key-file or set TORCHSHIELD_KEY; unkeyed hashing of PII is "
                                        "refused because IDs and phone numbers are easy to enumerate")
        self.keys = KeyedContext(key)
        self.counts: dict[str, Counter[str]] = {}
        self._cache: dict[tuple[str, str], tuple[str, list[str]]] = {}
        ops = [self.policy.default, *self.policy.entities.values()]
        self._person_dependent = any(o is not None and o.name == "date_shift" for o in ops)

    def text(self, text: str, *, person: str | None = None, column: str = "") -> str:
        """Replace every finding in ``text`` by its entity operator's output."""
        # Short cells repeat (categories, codes): remember their result. Not for date_shift,
        # whose output depends on the row's person.
        cacheable = len(text) <= 40 and not self._person_dependent
        if cacheable:
            hit = self._cache.get((column, text))
            if hit is not None:
                self.counts.setdefault(column, Counter()).update(hit[1])
                return hit[0]
        new_text, types = self._text(text, person, column)
        if cacheable:
            if len(self._cache) >= 200_000:
                self._cache.clear()
            self._cache[(column, text)] = (new_text, types)
        self.counts.setdefault(column, Counter()).update(types)
        return new_text

    def _text(self, text: str, person: str | None, column: str) -> tuple[str, list[str]]:
        from torchshield.data.pii import find_pii

        findings = find_pii(text, min_score=self.policy.min_score, types=self.policy.types, context=column)
        if not findings:
            return text, []
        out: list[str] = []
        pos = 0
        for f in findings:
            new = self.policy.operator_for(f.type).apply(f.text, Cell(f.type, person), self.keys)
            out.append(text[pos:f.start])
            out.append(new if new is not None else "")
            pos = f.end
        out.append(text[pos:])
        return "".join(out), [f.type for f in findings]

    def dataframe(self, df: pd.DataFrame) -> pd.DataFrame:
        """A de-identified copy of ``df`` (columns with ``drop`` removed)."""
        pol = self.policy
        out = df.copy()
        persons = (df[pol.person_key].astype(str).tolist() if pol.person_key is not None
                   else [None] * len(df))
        for col in list(df.columns):
            name = str(col)
            rule = pol.columns.get(name)
            if rule is not None and rule.drop:
                out = out.drop(columns=[col])
                self.counts.setdefault(name, Counter())["dropped"] += len(df)
                continue
            if rule is not None and rule.operator is not None:
                op = rule.operator
                if op.name == "keep":
                    continue
                cell_counts = self.counts.setdefault(name, Counter())
                values = df[col].tolist()
                new_values = []
                for v, who in zip(values, persons, strict=True):
                    if v is None or (isinstance(v, float) and v != v) or v == "":
                        new_values.append(v)
                        continue
                    new_values.append(op.apply(str(v), Cell(rule.entity, who), self.keys))
                    cell_counts[op.name] += 1
                out[col] = new_values
                continue
            if (rule is not None and rule.scan) or (rule is None and pol.unlisted_scan):
                if not _is_text(df[col]):
                    continue  # numbers and dates carry no free-text PII; generalise them explicitly
                out[col] = [self.text(v, person=who, column=name) if isinstance(v, str) and v else v
                            for v, who in zip(df[col].tolist(), persons, strict=True)]
        return out

    def report(self) -> dict[str, dict[str, int]]:
        return {col: dict(sorted(c.items())) for col, c in self.counts.items() if c}


def anonymize_text(text: str, policy: Policy | dict[str, Any] | None = None, *, key: Any | None = None) -> str:
    """One-shot: de-identify ``text`` under ``policy`` (default: replace every finding by <TYPE>)."""
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    return Anonymizer(pol, key=key).text(text)
