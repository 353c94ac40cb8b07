"""Run the checks and gather their sections into one report with an overall verdict."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torchshield._version import __version__
from torchshield.assess.checks import SECTIONS
from torchshield.assess.context import AssessContext, AssessInputs
from torchshield.assess.findings import FAIL, VERDICTS, Section, worst
from torchshield.assess.subject import NotAssessable
from torchshield.errors import CheckFailed, ShieldError

__all__ = ["FORMAT", "SECTION_IDS", "Report", "assess"]

FORMAT = "torchshield-report"
SECTION_IDS = tuple(section_id for section_id, _, _ in SECTIONS)
VERSION = 1


@dataclass
class Report:
    subject: dict[str, Any]
    sections: list[Section]
    created: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the demo's step table

    @property
    def verdict(self) -> str:
        return worst([s.verdict for s in self.sections])

    def counts(self) -> dict[str, int]:
        return {v: sum(s.verdict == v for s in self.sections) for v in VERDICTS}

    def section(self, section_id: str) -> Section:
        return next(s for s in self.sections if s.id == section_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "tool": f"torchshield {__version__}",
            "created": self.created,
            "seconds": round(self.seconds, 2),
            "subject": self.subject,
            "verdict": self.verdict,
            "counts": self.counts(),
            "sections": [s.to_dict() for s in self.sections],
            **self.extra,
        }


def _run_one(
    section_id: str, title: str, check: Callable[[AssessContext], Section], ctx: AssessContext
) -> Section:
    try:
        return check(ctx)
    except NotAssessable as exc:
        return Section(section_id, title).skip(exc.reason, exc.action)
    except CheckFailed as exc:  # e.g. the bundle fails its integrity check while loading
        section = Section(section_id, title)
        section.add("load", FAIL, str(exc), "restore the model from a trusted copy")
        return section
    except ShieldError as exc:  # bad input for this check (wrong key, unreadable table): say so, go on
        return Section(section_id, title).skip(f"skipped: could not run: {exc}")
    except Exception as exc:  # noqa: BLE001 - one section that cannot run must not abort the whole report
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return Section(section_id, title).skip(
            f"skipped: could not run on this model: {type(exc).__name__}: {first}",
            "rerun this section alone with --only to see the full error (--debug)")


def assess(
    inputs: AssessInputs,
    *,
    only: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    on_section: Callable[[Section], None] | None = None,
) -> Report:
    """Assess a model (and its data, and its service) and return the report.

    ``only`` / ``skip`` choose sections by id (see ``SECTION_IDS``). Raises ShieldError only when
    the model file itself is not usable input (missing path) or a section id is unknown;
    everything else, including a section that crashes, becomes a finding."""
    from torchshield.errors import InputError

    for flag, ids in (("--only", only or ()), ("--skip", skip)):
        unknown = [i for i in ids if i not in SECTION_IDS]
        if unknown:
            raise InputError(f"{flag}: unknown section {unknown[0]!r}", hint=f"sections: {', '.join(SECTION_IDS)}")
    if only is not None and not set(only) - set(skip):
        raise InputError("--only and --skip leave no section to run")

    if not inputs.model.is_file():
        raise InputError(f"{inputs.model}: model file not found")
    for name, p in (("--data", inputs.data), ("--train-data", inputs.train_data)):
        if p is not None and not p.is_file():
            raise InputError(f"{name}: {p} does not exist or is not a file")
    t0 = time.perf_counter()
    ctx = AssessContext(inputs)
    sections = []
    for section_id, title, check in SECTIONS:
        if (only is not None and section_id not in only) or section_id in skip:
            continue
        section = _run_one(section_id, title, check, ctx)
        if not section.findings:
            section.skip("the check produced no findings")
        sections.append(section)
        if on_section is not None:
            on_section(section)
    subject = {
        "model": inputs.model.name,
        "data": inputs.data.name if inputs.data else None,
        "train_data": inputs.train_data.name if inputs.train_data else None,
        "endpoint": bool(inputs.endpoint),
        "quick": inputs.quick,
    }
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return Report(subject, sections, created=created, seconds=time.perf_counter() - t0)
