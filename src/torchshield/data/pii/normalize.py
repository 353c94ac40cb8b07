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
    if len(nf) == len(folded) and (nf == folded or _same_shape(folded, nf)):
        # Length-preserving (the common case: full-width forms map one-to-one).
        return NormalizedText(text, nf, None)
    parts: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(folded):
        n = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
        parts.append(n)
        index.extend([i] * len(n))
    return NormalizedText(text, "".join(parts), tuple(index))


def _same_shape(a: str, b: str) -> bool:
    # Whole-string NFKC can compose across characters; accept it only if every char maps alone.
    return all(len(unicodedata.normalize("NFKC", ch)) == 1 for ch in a if ord(ch) > 127)
