"""Output leak scanning: PII in the model's answer that the caller did not send.

A model fine-tuned on private records can repeat them (a phone number, a name with its ID). The
gateway cannot tell a memorised value from an invented one, and does not need to: anything the
detector finds in the answer that is neither in the caller's own text (as sent, or as the model
saw it) nor a stand-in the gateway issued is treated as a leak. "In the caller's text" is decided
on a canonical form (NFKC, case-folded, spaces collapsed, spaces and ``-()`` between digits
removed) so ``138 1234 5678`` and ``13812345678`` are one number; a value must stand on its own
to count as present (not inside a longer number or word; a ``+86``/``0086``/``+1`` prefix allowed).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from torchshield.data.pii import Finding, find_pii

__all__ = ["Leak", "OwnText", "find_leaks", "mask_leaks"]

_BETWEEN_DIGITS = re.compile(r"(?<=[0-9+])[\s\-()（）.]+(?=[0-9(])|(?<=[0-9])[\s\-()（）.]+(?=[0-9])")
_SPACES = re.compile(r"\s+")
_ALNUM = re.compile(r"[0-9a-z]")
_DIGIT_LEAD = r"(?:(?<![0-9a-z])|(?<=\+86)|(?<=0086)|(?<=\+1))"


def canonical(text: str) -> str:
    s = unicodedata.normalize("NFKC", text).casefold()
    s = _BETWEEN_DIGITS.sub("", _BETWEEN_DIGITS.sub("", s))
    return _SPACES.sub(" ", s).strip()


class OwnText:
    """What the caller sent in this request (canonical), to tell their own values from leaks."""

    def __init__(self) -> None:
        self._raw: list[str] = []
        self._parts: list[str] = []
        self._stand_ins: list[str] = []
        self._stand_ins_canon: set[str] = set()

    def add(self, text: str) -> None:
        self._raw.append(text)  # canonicalised only when an answer holds a finding to check

    def add_stand_ins(self, stand_ins: Iterable[str]) -> None:
        self._stand_ins.extend(stand_ins)

    def holds(self, value: str) -> bool:
        c = canonical(value)
        if not c:
            return True
        if self._raw or self._stand_ins:
            self._parts += [canonical(t) for t in self._raw]
            self._stand_ins_canon.update(canonical(t) for t in self._stand_ins)
            self._raw.clear()
            self._stand_ins.clear()
        if c in self._stand_ins_canon:
            return True
        lead = (_DIGIT_LEAD if c[0].isdigit() else "(?<![0-9a-z])") if _ALNUM.match(c[0]) else ""
        tail = "(?![0-9a-z])" if _ALNUM.match(c[-1]) else ""
        pat = re.compile(lead + re.escape(c) + tail)
        return any(pat.search(p) for p in self._parts)

    def clear(self) -> None:
        for bucket in (self._raw, self._parts, self._stand_ins, self._stand_ins_canon):
            bucket.clear()


@dataclass(frozen=True)
class Leak:
    type: str
    start: int
    end: int


def find_leaks(output: str, own: OwnText, *, protected: list[tuple[int, int]], min_score: float,
               types: frozenset[str] | None) -> list[Leak]:
    """Findings in ``output`` that are not the caller's own values and do not overlap a stand-in."""
    findings: list[Finding] = find_pii(output, min_score=min_score, types=types)
    leaks = []
    for f in findings:
        if any(f.start < e and s < f.end for s, e in protected):
            continue
        if own.holds(f.text):
            continue
        leaks.append(Leak(f.type, f.start, f.end))
    return leaks


def mask_leaks(output: str, leaks: list[Leak]) -> str:
    """Each leaked span replaced by ``<TYPE>`` (one-way: not a placeholder, never re-identified)."""
    out, pos = [], 0
    for lk in sorted(leaks, key=lambda x: x.start):
        out.append(output[pos:lk.start])
        out.append(f"<{lk.type}>")
        pos = lk.end
    out.append(output[pos:])
    return "".join(out)


def count_types(leaks: Iterable[Leak]) -> dict[str, int]:
    return dict(sorted(Counter(lk.type for lk in leaks).items()))
