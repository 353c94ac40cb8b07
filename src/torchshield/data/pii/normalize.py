"""NFKC normalisation with an offset map back to the original text.

Chinese text often carries full-width digits and letters (``１３８…``, ``Ｘ``) and assorted dashes;
recognisers match on the normalised copy (ASCII digits, one hyphen) and report spans in the
original. Normalisation is per character, so every normalised character knows which original
character it came from."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["NormalizedText", "normalize"]

# Dashes and spaces NFKC leaves alone but people use as separators inside numbers.
_FOLD = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
                       "\u2212": "-", "\u00a0": " ", "\u3000": " ", "\u202f": " "})

# Marks that NFKC may compose with the previous character (changing lengths in ways that could
# cancel out); text holding any of them takes the per-character path.
_COMBINING = re.compile("[\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u0900-\u0903\u093a-\u094f"
                        "\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\u3099\u309a\ufe20-\ufe2f]")
_FOLD_CHARS = re.compile("[\u2010-\u2014\u2212\u00a0\u3000\u202f]")


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """``text`` is what recognisers see; ``original`` is what the caller gave."""

    original: str
    text: str
    # index_map[i] = index in ``original`` of normalised char i; None when identical lengths.
    index_map: tuple[int, ...] | None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a normalised [start, end) span onto the original text."""
        if self.index_map is None:
            return start, end
        m = self.index_map
        s = m[start] if start < len(m) else len(self.original)
        e = m[end - 1] + 1 if end > 0 else 0
        return s, max(s, e)


def normalize(text: str) -> NormalizedText:
    """Return the NFKC-normalised, dash-folded view of ``text`` with its offset map."""
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and _FOLD_CHARS.search(text) is None):
        return NormalizedText(text, text, None)
    folded = text.translate(_FOLD)
    nf = unicodedata.normalize("NFKC", folded)
    if len(nf) == len(folded) and (nf == folded or _COMBINING.search(folded) is None):
        # Same length and no combining marks: every character mapped to exactly one (the common
        # case: full-width digits, letters and punctuation such as ，：（）).
        return NormalizedText(text, nf, None)
    parts: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(folded):
        n = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
        parts.append(n)
        index.extend([i] * len(n))
    return NormalizedText(text, "".join(parts), tuple(index))
