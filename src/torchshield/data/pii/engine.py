"""``find_pii`` and its batch and DataFrame forms.

Pipeline per text: normalise (NFKC + offset map) -> run the recognisers chosen by language and
type -> drop matches under ``min_score`` -> resolve overlaps (higher score wins, then longer
span, then recogniser order) -> map spans back to the original text."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from torchshield.data.pii.finding import Finding, make_finding
from torchshield.data.pii.normalize import normalize
from torchshield.data.pii.recognizer import RawMatch, ScanText
from torchshield.data.pii.registry import RecognizerRegistry, get_registry
from torchshield.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["DEFAULT_MIN_SCORE", "find_pii", "find_pii_batch", "find_pii_dataframe"]

DEFAULT_MIN_SCORE = 0.5
_VERIFY_CEILING = 0.8  # the score a pending match (RawMatch.verify) competes at before it is verified
_CJK = re.compile("[\u4e00-\u9fff]")
_LATIN = re.compile("[A-Za-z][A-Za-z]")
_LANGS = {"zh": frozenset({"zh"}), "en": frozenset({"en"})}


def _languages(text: str, lang: str | None) -> frozenset[str]:
    if lang is not None:
        if lang not in _LANGS:
            raise InputError(f"unknown language {lang!r}", hint="use 'zh', 'en' or leave it out to detect")
        return _LANGS[lang]
    langs = set()
    if _CJK.search(text):
        langs.add("zh")
    if _LATIN.search(text):
        langs.add("en")
    return frozenset(langs)


def find_pii(text: str, *, lang: str | None = None, types: set[str] | frozenset[str] | None = None,
             min_score: float = DEFAULT_MIN_SCORE, registry: RecognizerRegistry | None = None,
             context: str = "", reference: bool = False) -> list[Finding]:
    """Find PII in ``text``; spans are indices into ``text`` (end exclusive).

    ``lang`` "zh"/"en" picks the name and address recognisers (numbers, emails, cards run for
    every language); None detects from the script. ``types`` limits the entity types.
    ``context`` is extra text that counts as context but is not searched (a column header).
    ``reference=True`` runs the slow specification path (each recogniser's readable pattern over
    the whole text, no gates, prefilters or windows); it returns what the default path returns,
    several times slower, and exists to test that."""
    if not isinstance(text, str):
        raise InputError(f"find_pii needs a str, got {type(text).__name__}")
    if not text or (len(text) < 9 and text.isdigit()):
        return []  # no built-in type is a run of fewer than 9 digits (ZIP codes, ages, counts)
    reg = registry if registry is not None else get_registry()
    wanted = frozenset(types) if types is not None else None
    if wanted is not None:
        unknown = wanted - reg.entity_types
        if unknown:
            raise InputError(f"unknown entity type(s): {', '.join(sorted(unknown))}",
                             hint=f"known: {', '.join(sorted(reg.entity_types))}")
    doc = normalize(text)
    prefix = f"{context}: " if context else ""
    ntext = prefix + doc.text
    scan = ScanText(ntext, min_score=min_score, reference=reference)
    shift = len(prefix)
    recognizers = reg.select(_languages(ntext, lang), wanted)
    matches: list[tuple[float, int, int, int, str]] = []
    pending: dict[tuple[int, int, int], tuple[RawMatch, float, Callable[[str, int, int, float], float]]] = {}
    for order, rec in enumerate(recognizers):
        for m in rec.analyze(scan):
            if m.end <= shift or (wanted is not None and m.type not in wanted):
                continue
            score = m.score
            if m.verify is not None:
                # A pending match competes at the score it gets if confirmed; the second
                # opinion is asked below, only if it survives overlap resolution.
                score = max(score, _VERIFY_CEILING)
                pending[(m.start - shift, m.end - shift, order)] = (m, m.score, m.verify)
            elif score < min_score:
                continue
            matches.append((score, m.start - shift, m.end - shift, order, m.type))
    kept = _resolve(matches)
    while pending and any((s, e, o) in pending for _, s, e, o, _ in kept):
        matches = [x for x in matches if (x[1], x[2], x[3]) not in pending]
        for (s, e, o), (m, rule_score, verify) in pending.items():
            final = verify(ntext, m.start, m.end, rule_score) if any(
                (k[1], k[2], k[3]) == (s, e, o) for k in kept) else rule_score
            if final >= min_score:
                matches.append((final, s, e, o, m.type))
        pending = {}
        kept = _resolve(matches)
    return [_finding(doc, t, s, e, sc, recognizers[o].name) for sc, s, e, o, t in kept]


def _resolve(matches: list[tuple[float, int, int, int, str]]) -> list[tuple[float, int, int, int, str]]:
    if len(matches) <= 1:
        return [(sc, max(s, 0), e, o, t) for sc, s, e, o, t in matches]
    matches.sort(key=lambda m: (-m[0], m[1] - m[2], m[3]))
    kept: list[tuple[float, int, int, int, str]] = []
    for m in matches:
        s, e = max(m[1], 0), m[2]
        if all(e <= k[1] or s >= k[2] for k in kept):
            kept.append((m[0], s, e, m[3], m[4]))
    kept.sort(key=lambda m: m[1])
    return kept


_ROUNDED: dict[float, float] = {}


def _finding(doc: Any, etype: str, s: int, e: int, score: float, name: str) -> Finding:
    os_, oe = doc.span(s, e) if doc.index_map is not None else (s, e)
    r = _ROUNDED.get(score)
    if r is None:
        r = round(score, 4)
        if len(_ROUNDED) < 4096:  # scores come from a small set of sums
            _ROUNDED[score] = r
    return make_finding(etype, os_, oe, doc.original[os_:oe], r, name)


def find_pii_batch(texts: Iterable[str | None], **options: Any) -> list[list[Finding]]:
    """``find_pii`` over many strings (None and non-strings give no findings)."""
    return [find_pii(t, **options) if isinstance(t, str) and t else [] for t in texts]


def find_pii_dataframe(df: pd.DataFrame, *, columns: Sequence[str] | None = None,
                       header_context: bool = True, **options: Any) -> pd.DataFrame:
    """Findings for every cell of ``df`` as a long table: row, column, type, start, end, text, score.

    With ``header_context`` the column name counts as context (a 姓名 or ``phone`` column
    raises the score of what it holds)."""
    import pandas as pd

    cols = list(columns) if columns is not None else [c for c in df.columns]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"column(s) not in the table: {', '.join(map(str, missing))}")
    rows: list[tuple[Any, str, str, int, int, str, float]] = []
    for col in cols:
        ctx = str(col) if header_context else ""
        for idx, value in df[col].items():
            if not isinstance(value, str) or not value:
                continue
            for f in find_pii(value, context=ctx, **options):
                rows.append((idx, str(col), f.type, f.start, f.end, f.text, f.score))
    return pd.DataFrame(rows, columns=["row", "column", "type", "start", "end", "text", "score"])


