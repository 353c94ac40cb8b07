"""Assessment: checks -> findings (pass/warn/fail/skipped, a reason, what to do) -> one report,
as ``report.json`` and a self-contained ``index.html`` with charts.

Threat model for the report itself: it is shared more widely than the model or the data, so it
holds counts, verdicts and fingerprints, never keys, tokens or raw PII values."""

from torchshield.assess.context import AssessInputs
from torchshield.assess.findings import FAIL, PASS, SKIPPED, VERDICTS, WARN, Chart, Finding, Section, worst
from torchshield.assess.report import Report, assess
from torchshield.assess.report_html import render_html, write_html
from torchshield.assess.report_json import report_json, write_json
from torchshield.assess.subject import NotAssessable
from torchshield.assess.write import write_report

__all__ = [
    "AssessInputs",
    "Chart",
    "FAIL",
    "Finding",
    "NotAssessable",
    "PASS",
    "Report",
    "SKIPPED",
    "Section",
    "VERDICTS",
    "WARN",
    "assess",
    "render_html",
    "report_json",
    "worst",
    "write_html",
    "write_json",
    "write_report",
]
