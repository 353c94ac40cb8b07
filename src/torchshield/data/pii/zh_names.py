"""Statistics for Chinese name candidates, learned from jieba's shipped dictionary (no download).

Two things a surname list and cue words cannot know, and that a trained model does:

* whether the characters after a surname are *name-like*: a naive-Bayes character model over the
  given names of the ~97,000 person-name entries jieba's dictionary tags ``nr`` (its tags come
  from the People's Daily corpus) against the characters of its ~250,000 other words. Each given
  character gets a log-likelihood ratio (莉 +3.8, 伟 +3.4, 芳 +2.5; 案 -3.7, 胞 -4.0, 度 -2.0),
  and two-character given names seen in those entries (秀英, 淑华) are known as pairs;
* whether the candidate is, or cuts through, an ordinary word: the same dictionary with its
  frequencies (高度, 方案, 江苏 are words; 上海|市 puts 海 inside 上海; 张主|任 cuts 主任).

The recogniser (``recognizers_cn.ChineseNameRecognizer``) asks these only at the few positions
where a surname starts, so the cost is a handful of dict lookups per candidate, not a tagger run
over the text. Loading takes about 0.4 s and 40 MB once per process, on first use. Without jieba
installed (the ``pii`` extra) ``load()`` returns None and the recogniser falls back to cues alone.
The surname list used to pick given names is the recogniser's own (lexicon/zh_surnames.txt)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from importlib import resources

from torchshield.data.pii.lexicon import load_words

__all__ = ["ZhNameStats", "load", "nr_spans"]

COMMON_WORD = 200  # a two-character word this frequent is a word first (萝卜 343), a name second (浩然 38)


@dataclass(frozen=True)
class ZhNameStats:
    words: dict[str, int]  # dictionary words of 2-4 characters -> frequency (names included)
    name_words: frozenset[str]  # those tagged as person names (nr, nrfg, nrt)
    char_lr: dict[str, float]  # log P(c | given name) - log P(c | other words)
    given_pairs: frozenset[str]  # two-character given names seen in the tagged names

    def given_lr(self, given: str) -> float:
        """Name-likeness of the given-name characters: the sum of per-character log-likelihood
        ratios (each clamped to [-3, 4]; a character never seen scores 0)."""
        lr = sum(max(-3.0, min(4.0, self.char_lr.get(c, 0.0))) for c in given)
        if len(given) == 2 and given in self.given_pairs:
            lr += 2.0
        return lr


@cache
def load() -> ZhNameStats | None:
    """The statistics, or None when jieba (the ``pii`` extra) is not installed."""
    try:
        root = resources.files("jieba")
    except ModuleNotFoundError:
        return None
    surnames = load_words("zh_surnames")
    single = frozenset(w for w in surnames if len(w) == 1)
    compound = frozenset(w for w in surnames if len(w) == 2)
    words: dict[str, int] = {}
    name_words: set[str] = set()
    name_chars: dict[str, int] = {}
    other_chars: dict[str, int] = {}
    pairs: set[str] = set()
    plain2: set[str] = set()  # common two-character words not tagged as names
    n_name = n_other = 0
    with root.joinpath("dict.txt").open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.split(" ")
            if len(parts) != 3:
                continue
            w, tag = parts[0], parts[2].rstrip()
            if 2 <= len(w) <= 4:
                words[w] = int(parts[1])
            if not tag.startswith("nr"):
                if len(w) == 2 and int(parts[1]) >= COMMON_WORD:
                    plain2.add(w)
                for c in w:
                    other_chars[c] = other_chars.get(c, 0) + 1
                n_other += len(w)
                continue
            if 2 <= len(w) <= 4:
                name_words.add(w)
            given = w[2:] if w[:2] in compound else w[1:] if w[0] in single else ""
            if 1 <= len(given) <= 2:
                for c in given:
                    name_chars[c] = name_chars.get(c, 0) + 1
                n_name += len(given)
                if len(given) == 2:
                    pairs.add(given)
    if not n_name or not n_other:  # pragma: no cover - an empty or broken dictionary
        return None
    ln, lo = math.log(n_name), math.log(n_other)
    char_lr = {c: math.log(name_chars.get(c, 0) + 0.5) - ln - (math.log(other_chars.get(c, 0) + 0.5) - lo)
               for c in set(name_chars) | set(other_chars)}
    # 胡萝卜 is tagged nr in jieba's dictionary; 萝卜 as a given name is that error, not a name.
    return ZhNameStats(words, frozenset(name_words), char_lr, frozenset(pairs - plain2))


# ---- jieba's HMM part-of-speech tagger as a second opinion ------------------------------------
# Candidates whose rule score falls just under the threshold (a name-like given name in a plain
# context: 代理人江奕辰携委托书, 康锦程与邵晓萌为夫妻关系) are passed to jieba's tagger through
# RawMatch.verify; the engine asks only for candidates that survive overlap resolution, on the
# clause around each, so its cost (~0.5-1 ms a clause) is paid on few records.
_LOCK = threading.Lock()
_TAGGER: list = []
_NR_CACHE: OrderedDict[str, tuple[tuple[int, int], ...]] = OrderedDict()
_NR_CACHE_SIZE = 4096
_CLAUSE_END = "。！？；!?;\n"
_WINDOW = 80


def _tagger() -> object | None:
    if not _TAGGER:
        with _LOCK:
            if not _TAGGER:
                try:
                    import logging

                    import jieba
                    import jieba.posseg

                    jieba.setLogLevel(logging.WARNING)
                    _TAGGER.append(jieba.posseg.POSTokenizer(jieba.Tokenizer()))
                except ImportError:  # pragma: no cover - the extra is part of `all`
                    _TAGGER.append(None)
    return _TAGGER[0]


def nr_spans(text: str, start: int, end: int) -> list[tuple[int, int]] | None:
    """Spans jieba's tagger labels a person name (nr, nrfg, nrt) in the clause holding
    ``text[start:end]``, in ``text`` coordinates; None when jieba is not installed."""
    tagger = _tagger()
    if tagger is None:
        return None
    a = max(0, start - _WINDOW)
    for j in range(start - 1, a - 1, -1):
        if text[j] in _CLAUSE_END:
            a = j + 1
            break
    b = min(len(text), end + _WINDOW)
    for j in range(end, b):
        if text[j] in _CLAUSE_END:
            b = j + 1
            break
    clause = text[a:b]
    with _LOCK:
        hit = _NR_CACHE.get(clause)
        if hit is not None:
            _NR_CACHE.move_to_end(clause)
    if hit is None:
        spans = []
        pos = 0
        with _LOCK:  # jieba's tokenizer is not thread-safe
            pairs = list(tagger.cut(clause))  # type: ignore[attr-defined]
        for pair in pairs:
            w, flag = pair.word, pair.flag
            if flag.startswith("nr"):
                spans.append((pos, pos + len(w)))
            pos += len(w)
        hit = tuple(spans)
        with _LOCK:
            _NR_CACHE[clause] = hit
            if len(_NR_CACHE) > _NR_CACHE_SIZE:
                _NR_CACHE.popitem(last=False)
    return [(a + s, a + e) for s, e in hit]
