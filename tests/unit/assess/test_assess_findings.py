"""Verdict arithmetic: a section is as bad as its worst finding; skipped never hides a result."""

from __future__ import annotations

import pytest

from torchshield.assess import FAIL, PASS, SKIPPED, WARN, Finding, Section, worst


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([], SKIPPED),
        ([SKIPPED], SKIPPED),
        ([SKIPPED, PASS], PASS),
        ([PASS, WARN, PASS], WARN),
        ([WARN, FAIL, SKIPPED], FAIL),
        ([FAIL, PASS], FAIL),
    ],
)
def test_worst_verdict(verdicts, expected):
    assert worst(verdicts) == expected


def test_unknown_verdict_is_refused():
    with pytest.raises(ValueError, match="unknown verdict"):
        Finding("x", "ok", "reason")
    with pytest.raises(ValueError, match="unknown verdict"):
        worst(["pass", "green"])


def test_section_verdict_and_dict():
    s = Section("demo", "Demo")
    assert s.verdict == SKIPPED
    s.add("a", PASS, "fine")
    s.add("b", WARN, "hmm", "do this", count=3)
    d = s.to_dict()
    assert d["verdict"] == WARN == s.verdict
    assert d["findings"][1] == {
        "check": "b",
        "verdict": WARN,
        "reason": "hmm",
        "action": "do this",
        "evidence": {"count": 3},
    }
    s.skip("not run")
    assert s.verdict == WARN  # a skipped finding never lowers the verdict
