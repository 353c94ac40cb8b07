"""What a detector reports: one ``Finding`` per PII span, with offsets into the caller's text."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ENTITY_LABELS", "ENTITY_TYPES", "Finding"]

# The entity names of the public API (issue 3). Recognisers a user registers may add more.
ENTITY_TYPES: tuple[str, ...] = (
    "ADDRESS", "BANK_CARD", "CN_HK_MACAU_PERMIT", "CN_LANDLINE", "CN_LICENSE_PLATE", "CN_MOBILE",
    "CN_PASSPORT", "CN_RESIDENT_ID", "CN_USCC", "DATE_OF_BIRTH", "EMAIL", "IBAN", "IP_ADDRESS",
    "PERSON", "PHONE_NUMBER", "URL", "US_SSN",
)


# Two independent labels per type (reference/cn-pii-rules.md 5.5): the identifier class for
# de-identification (direct / quasi), and the PIPL art. 28 sensitive category, if any, for
# consent and impact assessments. The ID number is a direct identifier but, under GB/T 45574,
# not itself sensitive PI; bank cards are financial accounts.
ENTITY_LABELS: dict[str, tuple[str, str | None]] = {
    "ADDRESS": ("direct", "whereabouts"), "BANK_CARD": ("direct", "financial_account"),
    "CN_HK_MACAU_PERMIT": ("direct", None), "CN_LANDLINE": ("direct", None),
    "CN_LICENSE_PLATE": ("direct", "whereabouts"), "CN_MOBILE": ("direct", None), "CN_PASSPORT": ("direct", None),
    "CN_RESIDENT_ID": ("direct", None), "CN_USCC": ("direct", None), "DATE_OF_BIRTH": ("quasi", None),
    "EMAIL": ("direct", None), "IBAN": ("direct", "financial_account"), "IP_ADDRESS": ("quasi", "whereabouts"),
    "PERSON": ("direct", None), "PHONE_NUMBER": ("direct", None), "URL": ("quasi", None),
    "US_SSN": ("direct", None),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected PII span.

    ``start``/``end`` are Python ``str`` indices into the text that was scanned (end exclusive),
    so ``text[f.start:f.end] == f.text`` even when matching ran on a normalised copy.
    ``score`` in [0, 1]: about 0.95+ for checksum-validated numbers, 0.5-0.85 for pattern or
    dictionary matches, raised by nearby context words."""

    type: str
    start: int
    end: int
    text: str
    score: float
    recognizer: str = ""

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """A JSON-able dict; ``redact=True`` drops the matched text (for reports that must not hold PII)."""
        d = asdict(self)
        if redact:
            d.pop("text")
        return d


_SETTERS = tuple(Finding.__dict__[f].__set__ for f in ("type", "start", "end", "text", "score", "recognizer"))


def make_finding(etype: str, start: int, end: int, text: str, score: float, recognizer: str) -> Finding:
    """``Finding(...)`` at half the cost: a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` per field; this sets the slots directly (the engine makes millions)."""
    f = object.__new__(Finding)
    st, ss, se, sx, sc, sr = _SETTERS
    st(f, etype)
    ss(f, start)
    se(f, end)
    sx(f, text)
    sc(f, score)
    sr(f, recognizer)
    return f
