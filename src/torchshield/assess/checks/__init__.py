"""The report's sections, in the order a reviewer reads them. Each check is a function
``(AssessContext) -> Section``; the registry is an explicit tuple so what runs is visible here."""

from __future__ import annotations

from collections.abc import Callable

from torchshield.assess.checks.model_file import check_model_file
from torchshield.assess.checks.pii import check_pii_residue
from torchshield.assess.checks.privacy import check_privacy
from torchshield.assess.checks.robustness import check_robustness
from torchshield.assess.checks.serving import check_serving
from torchshield.assess.checks.watermark import check_watermark
from torchshield.assess.context import AssessContext
from torchshield.assess.findings import Section

__all__ = ["SECTIONS", "SectionCheck"]

SectionCheck = Callable[[AssessContext], Section]

# (section id, title, check). Ids are stable: they are HTML anchors and report.json keys.
SECTIONS: tuple[tuple[str, str, SectionCheck], ...] = (
    ("model-file", "File safety and signature", check_model_file),
    ("privacy", "Privacy: claimed budget and measured leakage", check_privacy),
    ("robustness", "Adversarial robustness", check_robustness),
    ("watermark", "Ownership watermark", check_watermark),
    ("pii-residue", "PII residue in the data", check_pii_residue),
    ("serving", "Serving configuration", check_serving),
)
