"""The fast detection path (issue 20, speed) against its specification, span for span.

``find_pii(text, reference=True)`` runs every recogniser's readable pattern over the whole text,
with no gate, prefilter, window or rewritten pattern; the default path must return exactly the
same findings. Compared on seeded generated corpora (Faker records with decoys, name corpora) and
on seeded random strings built from the pieces the patterns care about (digits, separators,
titles, cue words, CJK), so that edges the corpora do not reach (a lookbehind at a window edge,
``Mac`` vs ``Mc``, ``+86`` vs ``0086``) are exercised too."""

from __future__ import annotations

import random
import re
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

import pytest

from torchshield.data import find_pii
from torchshield.data.pii import get_registry
from torchshield.data.pii.recognizer import PatternRecognizer
from torchshield.data.synth import generate_records

_PIECES = [
    "0", "1", "2", "5", "6", "9", "00", "000", "666", "86", "+86 ", "0086", "+1 ", "001 ", "(", ")", "(0", "-", ".",
    " ", " ", " ", ", ", ":", "/", "@", "x", "ext ", "#", "138", "1234", "5678", "2008", "19900101", "1234567890",
    "461-02-8033", "078.05.1123", "11010519491231002X", "91350211M000100Y43", "6222 0200 1234 5678", "192.168.0.1",
    "::ffff:", "2001:db8::1", "GB82 WEST 1234 5698 7654 32", "E12345678", "C1234567", "H12345678", "京A12345",
    "SSN ", "Phone: ", "call ", "DOB ", "born ", "Order #", "ticket ", "card ", "IBAN ", "tel ", "passport ",
    "Mr. ", "Mrs ", "Dr ", "Prof. ", "Sir ", "Dame ", "Miss ", "McDonald", "MacArthur", "O'Neil", "D'Angelo",
    "O’Brien", "Anne", "Smith", "van der ", "Jr.", "III", "Patient ", "User ", "with ", "Hospital", "Potter",
    "99869 ", "Main St", "Apt 4", "Springfield, IL 62704", "PSC 1234, Box 5678, APO AE 09012", "USS Nimitz",
    "July 07, 2008", "3-Mar-1990", "1990-05-03", "1990年5月3日", "www.", "https://", "a.example.com",
    "张伟", "欧阳", "患者", "身份证", "手机", "户名", "住址", "北京市", "朝阳区", "建国路88号", "，", "。", "（", "）",
    "订单号", "信用代码", "出生", "a", "Z", "é", "\n",
]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(3, 16))) for _ in range(n)]


def _same(texts: list[str], **options: object) -> None:
    for t in texts:
        fast = find_pii(t, **options)  # type: ignore[arg-type]
        slow = find_pii(t, reference=True, **options)  # type: ignore[arg-type]
        assert fast == slow, t


@pytest.mark.parametrize("locale", ["en_US", "zh_CN"])
def test_fast_path_equals_reference_on_generated_records(locale):
    _same([r.text for r in generate_records(300, locale=locale, seed=7)])


def test_fast_path_equals_reference_on_random_pieces():
    _same(_random_texts(250, seed=20))


def test_fast_path_equals_reference_under_other_thresholds():
    texts = _random_texts(120, seed=21) + [r.text for r in generate_records(60, locale="en_US", seed=8)]
    _same(texts, min_score=0.0)
    _same(texts, min_score=0.85)


def test_fast_path_equals_reference_on_name_corpora():
    from torchshield.data.name_corpus import generate_name_records

    pytest.importorskip("faker")
    for locale in ("zh_CN", "en_US"):
        _same([r.text for r in generate_name_records(150, locale=locale, source="faker", seed=4)])


def test_each_fast_pattern_matches_what_its_readable_pattern_matches():
    """Pattern by pattern, with the left-boundary rule, on texts that hold many candidates."""
    texts = _random_texts(800, seed=22)
    rewritten = [r for r in get_registry() if isinstance(r, PatternRecognizer) and r.fast is not r.pattern]
    assert len(rewritten) >= 10
    for rec in rewritten:
        for t in texts:
            assert rec._spans(t, pattern=rec.fast) == rec._spans(t, pattern=rec.pattern), (rec.name, t)


def _opens_with_one_class(pattern: re.Pattern[str]) -> bool:
    data = sre_parse.parse(pattern.pattern, pattern.flags).data
    while data and data[0][0] is sre_c.SUBPATTERN:
        data = data[0][1][3].data
    if not data:
        return False
    op, av = data[0]
    if op in (sre_c.LITERAL, sre_c.IN):
        return True
    return op is sre_c.BRANCH and all(b.data and b.data[0][0] is sre_c.LITERAL for b in av[1])


def test_patterns_run_on_every_text_open_with_one_character_class():
    """What makes Python's regex engine skip to candidate positions in C (the speed of the fast path)."""
    slow = []
    for rec in get_registry():
        if isinstance(rec, PatternRecognizer):
            pats = [rec.fast] + ([rec.gate] if rec.gate is not None else [])
            # patterns searched only after a needs-word matched (email '@', url 'http', IPv6 ':') or
            # compiled case-insensitively (no character class prefix is possible) are exempt
            if rec.needs or rec.pattern.flags & re.IGNORECASE:
                pats = [p for p in pats if p is rec.gate]
        else:  # the patterns these recognisers search with (others are only .match()ed at a position)
            searched = {"en_address": ("_street_fast", "_military_fast"), "cn_address": ("_anchor_fast",),
                        "cn_person": ("_surname_start", "_cue", "_title")}
            pats = [getattr(rec, a) for a in searched.get(rec.name, ())]
        slow += [(rec.name, p.pattern[:40]) for p in pats if not _opens_with_one_class(p)]
    assert slow == []
