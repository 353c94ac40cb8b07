"""The recogniser contract and the two ready-made kinds: regex + validator + context words
(``PatternRecognizer``) and any callable (``FunctionRecognizer``).

A recogniser sees the normalised text (NFKC, ASCII digits, one hyphen) and its lower-cased
copy, and yields ``RawMatch`` tuples in normalised coordinates; the engine maps them back,
resolves overlaps and applies the score threshold. Patterns never use ``\\b``: next to CJK
characters it does not fire in Python, so numbers use explicit digit/letter lookarounds."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

__all__ = [
    "ALNUM",
    "DIGITS",
    "FunctionRecognizer",
    "ScanText",
    "NEG_NUMBER",
    "NUM_AFTER",
    "NUM_BEFORE",
    "PatternRecognizer",
    "RawMatch",
    "Recognizer",
    "has_context",
]

# Boundaries for numbers and codes: no ASCII letter or digit on either side (CJK is fine).
NUM_BEFORE = r"(?<![0-9A-Za-z])"
NUM_AFTER = r"(?![0-9A-Za-z])"
# Labels that say a number is something else (an order, a ticket): a checksum passing by chance
# on such a number is not PII. They lower a score as context words raise it.
NEG_NUMBER = ("订单号", "订单", "流水号", "流水", "单号", "编号", "运单", "order", "ticket", "invoice",
              "tracking", "ref", "serial", "txn", "transaction")


# Every pattern the engine runs often opens with one character class or literal, never with a
# repeat, a lookahead or an alternation of classes: then Python's regex engine skips ahead to the
# next possible first character in C instead of entering the matcher at every position (measured
# 1.6-3.7x per pattern on the benchmark corpus). ``[0-9][0-9]*`` is ``[0-9]+`` written that way.
_DIGIT_RUN = re.compile(r"[0-9][0-9]*")
# How far from a context word a context-only pattern is searched (has_context's window, 24
# characters before a match and 12 after it, plus the longest match such a pattern makes).
_WINDOW_BEFORE = 12 + 40
_WINDOW_AFTER = 24 + 40
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"


class ScanText:
    """What a recogniser scans: the normalised text, its lower-cased copy, the longest ASCII digit
    run (a cheap gate: most numeric recognisers cannot match without one) and the caller's
    score threshold (so a recogniser can skip work whose result would be dropped anyway).

    ``reference=True`` asks for the slow path: every recogniser runs its readable pattern over
    the whole text, with no gate, no skip and no window. It is the specification the fast path
    (fast patterns, gates, context windows) is tested against, span for span."""

    __slots__ = ("_digit_run", "lower", "min_score", "reference", "text")

    def __init__(self, text: str, *, min_score: float = 0.0, lower: str | None = None,
                 reference: bool = False) -> None:
        self.text = text
        self.lower = lower if lower is not None else text.lower()
        self.min_score = min_score
        self.reference = reference
        self._digit_run = -1

    @property
    def digit_run(self) -> int:
        if self._digit_run < 0:
            self._digit_run = max(map(len, _DIGIT_RUN.findall(self.text)), default=0)
        return self._digit_run


class RawMatch(NamedTuple):
    """A match in normalised coordinates. ``verify``, when set, is a second opinion the engine
    asks only if the match survives overlap resolution: ``verify(text, start, end, score)``
    returns the final score (how a costly model runs only where candidates are)."""

    type: str
    start: int
    end: int
    score: float
    verify: Callable[[str, int, int, float], float] | None = None


def has_context(lower: str, start: int, end: int, words: Sequence[str], *, before: int = 24,
                after: int = 12) -> bool:
    """Whether any context word occurs within a character window around [start, end).

    Windows are on the raw (lower-cased) string, not tokens: Chinese has no spaces."""
    if not words:
        return False
    window = lower[max(0, start - before):start] + " " + lower[end:end + after]
    return any(w in window for w in words)


class Recognizer(ABC):
    """Finds one or more entity types. ``languages`` None means it runs for every language."""

    name: str = ""
    entity_types: frozenset[str] = frozenset()
    languages: frozenset[str] | None = None

    @abstractmethod
    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        """Yield matches in ``doc.text`` (already normalised), in its coordinates."""


# A validator gets the matched text with separators removed and answers: True (valid),
# False/None (invalid), or a float score that replaces the recogniser's valid score.
Validator = Callable[[str], "bool | float | None"]


class PatternRecognizer(Recognizer):
    """Regex + optional validator + context words, the workhorse for structured PII.

    Scoring: a validated match gets ``score``; context words nearby add ``context_boost``.
    ``require_context=True`` patterns (no checksum: 15-digit IDs, plates without cues, bare
    10-digit phones) score ``no_context_score`` alone, below the default threshold. A match that
    fails validation is dropped, unless context is present and ``invalid_score`` is set: then it
    is kept with that low score (typos and OCR errors in real IDs are common; the default
    threshold hides them, ``min_score=0`` shows them)."""

    def __init__(self, name: str, entity: str, pattern: str | re.Pattern[str], *,
                 validator: Validator | None = None, score: float = 0.6,
                 context: Sequence[str] = (), context_boost: float = 0.25,
                 require_context: bool = False, no_context_score: float = 0.3,
                 invalid_score: float | None = 0.3, languages: Iterable[str] | None = None,
                 flags: int = 0, group: int = 0,
                 clean: Callable[[str], str] | None = None, min_digit_run: int = 0,
                 needs: Sequence[str] = (), left_boundary: bool | str = False,
                 negative_context: Sequence[str] = (),
                 trim: Callable[[str], int] | None = None, gate: str | None = None,
                 fast: str | None = None) -> None:
        self.name = name
        self.entity = entity
        self.entity_types = frozenset({entity})
        self.pattern = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)
        # ``fast``: the same pattern written to open with one character class (see _DIGIT_RUN);
        # it must match exactly what ``pattern`` matches (tests compare them on seeded corpora).
        self.fast = re.compile(fast, self.pattern.flags) if fast is not None else self.pattern
        self.validator = validator
        self.score = score
        self.context = tuple(w.lower() for w in context)
        self.context_boost = context_boost
        self.require_context = require_context
        self.no_context_score = no_context_score
        self.invalid_score = invalid_score
        self.languages = frozenset(languages) if languages is not None else None
        self.group = group
        self.clean = clean if clean is not None else _strip_seps
        self.min_digit_run = min_digit_run
        self.needs = tuple(needs)
        # Characters that must not precede a match (True: ASCII letters and digits).
        self.left_boundary = frozenset(ALNUM if left_boundary is True else (left_boundary or ""))
        # Digit-bounded numbers (cards, IDs) never start right after "<digit>.": that run is the
        # fraction of a decimal (measurements such as -0.4532015112830366 pass Luhn one time in ten).
        # Patterns that may follow a dot themselves (IP addresses list "." as forbidden) are left alone.
        self._skip_decimal_fractions = "0" in self.left_boundary and "." not in self.left_boundary
        self.negative_context = tuple(w.lower() for w in negative_context)
        # Context words as one alternation: one C-level scan of the window per match instead of a
        # Python loop over the words.
        self._ctx_re = _words_re(self.context)
        self._neg_re = _words_re(self.negative_context)
        self._needs_re = _words_re(self.needs)
        # Context-only: with no context word anywhere, every match would score no_context_score.
        self._context_only = require_context
        # ``trim(match) -> n`` keeps the first n characters (an IBAN ends where its country's
        # length says, not where the regex stopped: a trailing " X" is not part of it).
        self.trim = trim
        # ``gate``: a cheap regex every match must contain. One search of it decides whether the
        # full pattern (with its boundary restarts) runs at all; most texts hold no phone, card
        # or IP address, so most recognisers stop here.
        self.gate = re.compile(gate) if gate else None
        # A gate that needs a character outside ASCII (a plate's province character) is answered
        # by str.isascii(), a flag Python keeps on every string, without a search.
        self._gate_non_ascii = gate is not None and _needs_non_ascii(gate)

    def _skip(self, doc: ScanText) -> bool:
        if self.min_digit_run and doc.digit_run < self.min_digit_run:
            return True
        if self._needs_re is not None and self._needs_re.search(doc.lower) is None:
            return True
        if self.gate is not None and (self._gate_non_ascii and doc.text.isascii()
                                      or self.gate.search(doc.text) is None):
            return True
        # Context-only patterns: without a context word anywhere, every match would score
        # no_context_score, under the threshold.
        return (self._context_only and self.no_context_score < doc.min_score
                and (self._ctx_re is None or self._ctx_re.search(doc.lower) is None))

    def _windows(self, doc: ScanText) -> list[tuple[int, int]]:
        """Where a context-only pattern (dates of birth, bare SSNs, 15-digit IDs) is searched when
        a match without a context word would be dropped anyway: the windows has_context looks at,
        widened to whitespace so that no match is cut by an edge."""
        text, lower, n = doc.text, doc.lower, len(doc.text)
        spans: list[tuple[int, int]] = []
        if self._ctx_re is None:
            return []
        for m in self._ctx_re.finditer(lower):
            # has_context wants the word within 24 characters before the match or 12 after
            # it: the match lies within [i - 12 - longest, i + 24 + longest)
            spans.append((max(0, m.start() - _WINDOW_BEFORE), min(n, m.end() + _WINDOW_AFTER)))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if a > 0:
                a = max(text.rfind(" ", 0, a), text.rfind("\n", 0, a)) + 1
            if b < n:
                b = min((j for j in (text.find(" ", b), text.find("\n", b)) if j >= 0), default=n)
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def _spans(self, text: str, pos: int = 0, endpos: int | None = None, *,
               pattern: re.Pattern[str] | None = None) -> list[tuple[int, int]]:
        """(start, end) of the pattern's group in text[pos:endpos], after the left-boundary rule."""
        n = len(text) if endpos is None else endpos
        group = self.group
        pat = self.fast if pattern is None else pattern
        if not self.left_boundary:
            return [m.span(group) for m in pat.finditer(text, pos, n)]
        # ``left_boundary`` replaces a leading lookbehind such as (?<![0-9A-Za-z]), which would
        # stop the regex engine from skipping ahead to the first possible character. A match
        # preceded by a forbidden character is dropped and the search resumes after the run
        # of forbidden characters: no position inside it is allowed either.
        forbidden = self.left_boundary
        search = pat.search
        skip_decimal = self._skip_decimal_fractions
        out: list[tuple[int, int]] = []
        while True:
            m = search(text, pos, n)
            if m is None:
                return out
            s = m.start()
            if s > 0 and (text[s - 1] in forbidden
                          or skip_decimal and s > 1 and text[s - 1] == "." and text[s - 2].isdigit()):
                pos = s + 1
                while pos < n and text[pos] in forbidden:
                    pos += 1
                continue
            out.append(m.span(group))
            pos = max(m.end(), s + 1)

    def analyze(self, doc: ScanText) -> list[RawMatch]:
        if doc.reference:
            every = self._spans(doc.text, pattern=self.pattern)
            return self._score_spans(doc, every) if every else []
        if self._skip(doc):
            return []
        text = doc.text
        if self.require_context and self.no_context_score < doc.min_score:
            spans: list[tuple[int, int]] = []
            for a, b in self._windows(doc):
                spans.extend(sp for sp in self._spans(text, a, b) if not spans or sp[0] > spans[-1][0])
        else:
            spans = self._spans(text)
        if not spans:
            return []
        return self._score_spans(doc, spans)

    def _score_spans(self, doc: ScanText, spans: list[tuple[int, int]]) -> list[RawMatch]:
        text, lower = doc.text, doc.lower
        out: list[RawMatch] = []
        entity, validator, trim = self.entity, self.validator, self.trim
        ctx_re, neg_re = self._ctx_re, self._neg_re
        for start, end in spans:
            if trim is not None:
                end = start + trim(text[start:end])
            if start == end:
                continue
            ctx = ctx_re is not None and (ctx_re.search(lower, max(0, start - 24), start) is not None
                                          or ctx_re.search(lower, end, end + 12) is not None)
            score = self.score
            if validator is not None:
                verdict = validator(self.clean(text[start:end]))
                if verdict is True:
                    score = self.score
                elif verdict is False or verdict is None:
                    if ctx and self.invalid_score is not None:
                        out.append(RawMatch(entity, start, end, self.invalid_score))
                    continue
                else:
                    score = float(verdict)
            if neg_re is not None and neg_re.search(lower, max(0, start - 8), start) is not None:
                score -= 0.5  # 订单号 / Order #: the number is labelled as something else
            if self.require_context and not ctx:
                score = min(score, self.no_context_score)
            elif ctx:
                score = score + self.context_boost
            out.append(RawMatch(entity, start, end, min(1.0, max(0.0, score))))
        return out


def _needs_non_ascii(pattern: str) -> bool:
    """Whether a gate that is one character class holds only non-ASCII characters."""
    return pattern.startswith("[") and pattern.endswith("]") and "\\" not in pattern and "-" not in pattern[1:-1] \
        and all(ord(c) > 127 for c in pattern[1:-1])


def _words_re(words: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching any of ``words`` (longest first), or None for no words. Searched with
    pos/endpos over the lower-cased text, it answers what has_context answers for the same
    window (a word must lie wholly inside the window)."""
    if not words:
        return None
    return re.compile("|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)))


def _strip_seps(s: str) -> str:
    return s.replace(" ", "").replace("-", "")


class FunctionRecognizer(Recognizer):
    """Wraps ``fn(text) -> iterable of (type, start, end, score)``: bring any detector
    (a model, a lookup table) without subclassing."""

    def __init__(self, name: str, entity_types: Iterable[str],
                 fn: Callable[[str], Iterable[tuple[str, int, int, float]]], *,
                 languages: Iterable[str] | None = None) -> None:
        self.name = name
        self.entity_types = frozenset(entity_types)
        self.fn = fn
        self.languages = frozenset(languages) if languages is not None else None

    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        for t, s, e, sc in self.fn(doc.text):
            yield RawMatch(t, int(s), int(e), float(sc))
