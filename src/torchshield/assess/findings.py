"""What an assessment says: findings with a verdict, grouped into report sections.

A verdict is one of ``pass``, ``warn``, ``fail`` or ``skipped``. Every finding carries the
reason for its verdict and what to do about it, because a reviewer reading the report must be
able to act on it without reading our code. ``skipped`` is never a silent pass: it says why
the check did not run (an input was not given, or the capability is not in this build)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chart", "FAIL", "Finding", "PASS", "SKIPPED", "Section", "VERDICTS", "WARN", "worst"]

PASS, WARN, FAIL, SKIPPED = "pass", "warn", "fail", "skipped"
VERDICTS = (PASS, WARN, FAIL, SKIPPED)
# Severity order for combining verdicts; a skipped check neither passes nor fails a section.
_RANK = {SKIPPED: 0, PASS: 1, WARN: 2, FAIL: 3}


def worst(verdicts: list[str]) -> str:
    """The most severe verdict; ``skipped`` only when nothing ran."""
    for v in verdicts:
        if v not in _RANK:
            raise ValueError(f"unknown verdict {v!r}; expected one of {VERDICTS}")
    return max(verdicts, key=_RANK.__getitem__, default=SKIPPED)


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``reason`` says why, ``action`` what to do (empty for a plain pass)."""

    check: str
    verdict: str
    reason: str
    action: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in _RANK:
            raise ValueError(f"unknown verdict {self.verdict!r}; expected one of {VERDICTS}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "verdict": self.verdict,
            "reason": self.reason,
            "action": self.action,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Chart:
    """A figure rendered to an inline data URI (so the HTML report needs no other file)."""

    id: str
    title: str
    data_uri: str
    alt: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "alt": self.alt}


@dataclass
class Section:
    """One part of the report (file safety, privacy, ...); its verdict is its worst finding's."""

    id: str
    title: str
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    charts: list[Chart] = field(default_factory=list)
    summary: str = ""

    @property
    def verdict(self) -> str:
        return worst([f.verdict for f in self.findings])

    def add(self, check: str, verdict: str, reason: str, action: str = "", **evidence: Any) -> Finding:
        finding = Finding(check, verdict, reason, action, evidence)
        self.findings.append(finding)
        return finding

    def skip(self, reason: str, action: str = "") -> Section:
        """Mark the whole section as not run, saying why."""
        self.add("section", SKIPPED, reason, action)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "verdict": self.verdict,
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "metrics": self.metrics,
            "charts": [c.to_dict() for c in self.charts],
        }
