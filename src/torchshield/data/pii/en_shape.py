"""How much a capitalised word looks like a person's name, from its letters: a naive-Bayes model
over character trigrams (``^ma``, ``ola``, ``ni$``) of given names and surnames against other
capitalised words, shipped as a table (``lexicon/en_name_shape.json``, ~6,000 trigrams; nothing
is downloaded at run time).

Trained (``build_table``, with Faker installed) on the name lists of 26 Faker locales and the
census lists our recogniser uses, against common English words, street, place, company and job
words. The locales the held-out name corpus draws from (``name_corpus._EN_HELD_LOCALES``: en_IN,
fr_FR, it_IT, es_ES, de_DE, nl_NL) are left out, and so is every name that also occurs in them,
so the held-out figures measure names the model has never seen. It is what lets the English
name recogniser accept ``Cesare Ossola`` or ``Qabil Ramachandran`` (no list knows them, spaCy's
small model calls them ORG or nothing) while ``Project Apollo`` or ``Federal Express`` stay out."""

from __future__ import annotations

import json
import math
import re
from functools import cache, lru_cache
from importlib import resources

__all__ = ["build_table", "word_score"]

TRAIN_LOCALES = ("en_GB", "en_IE", "en_NZ", "en_KE", "en_NG", "en_PK", "pt_PT", "pt_BR", "pl_PL", "cs_CZ",
                 "sk_SK", "sv_SE", "da_DK", "no_NO", "fi_FI", "hu_HU", "ro_RO", "hr_HR", "sl_SI", "et_EE",
                 "lt_LT", "lv_LV", "tr_TR", "id_ID", "ga_IE", "is_IS", "en_US")
HELD_OUT_LOCALES = ("en_IN", "fr_FR", "it_IT", "es_ES", "de_DE", "nl_NL")
_WORD = re.compile(r"[A-ZÀ-Þ][a-zß-ÿ']+")


def _grams(word: str) -> list[str]:
    w = "^" + word.lower() + "$"
    return [w[i:i + 3] for i in range(len(w) - 2)]


@cache
def _table() -> dict[str, float]:
    raw = resources.files("torchshield.data.pii.lexicon").joinpath("en_name_shape.json").read_text(encoding="utf-8")
    return dict(json.loads(raw)["table"])


@lru_cache(maxsize=1 << 16)  # bounded: words come from arbitrary text in a long-running gateway
def word_score(word: str) -> float:
    """Mean log-likelihood ratio (name vs other word) of the word's trigrams; > 0 looks like a name."""
    table = _table()
    grams = _grams(word)
    return sum(table.get(g, 0.0) for g in grams) / len(grams) if grams else 0.0


def _locale_names(locale: str) -> set[str]:
    import importlib

    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    out: set[str] = set()
    for attr in ("first_names", "first_names_male", "first_names_female", "last_names"):
        values = getattr(provider, attr, None)
        if values is None:
            continue
        for w in (values.keys() if isinstance(values, dict) else values):
            out.update(t for t in re.split(r"[ -]", str(w)) if _WORD.fullmatch(t))
    return out


def training_words() -> tuple[set[str], set[str], set[str]]:
    """(names, other words, held-out names): the training sets, disjoint from the held-out names."""
    from faker.providers.address.en_US import Provider as Address
    from faker.providers.company.en_US import Provider as Company
    from faker.providers.job.en_US import Provider as Job
    from faker.providers.lorem.en_US import Provider as Lorem

    from torchshield.data.pii.lexicon import load_words

    held = set().union(*(_locale_names(loc) for loc in HELD_OUT_LOCALES))
    names = set().union(*(_locale_names(loc) for loc in TRAIN_LOCALES))
    names |= set(load_words("en_first_names")) | set(load_words("en_last_names"))
    names -= held
    other = {w.capitalize() for w in Lorem.word_list}
    for attr in ("street_suffixes", "states", "city_prefixes", "city_suffixes", "countries"):
        values = getattr(Address, attr, ())
        for w in (values.keys() if isinstance(values, dict) else values):
            other.update(t for t in str(w).split() if t[:1].isupper() and t[1:].islower())
    for group in list(Company.catch_phrase_words) + list(getattr(Company, "bsWords", ())):
        for w in group:
            other.update(t.capitalize() for t in w.replace("-", " ").split())
    for job in Job.jobs:
        other.update(t.capitalize() for t in re.split(r"[ ,/()-]+", job) if t.isalpha())
    return names, other - names, held


def build_table() -> dict[str, float]:
    """The trigram table (what lexicon/en_name_shape.json holds): add-0.5 smoothed log ratios,
    trigrams seen at least twice with |ratio| >= 0.2, rounded to 0.01."""
    from collections import Counter

    names, other, _ = training_words()
    cn: Counter[str] = Counter()
    cx: Counter[str] = Counter()
    for w in names:
        cn.update(_grams(w))
    for w in other:
        cx.update(_grams(w))
    nn, nx = sum(cn.values()), sum(cx.values())
    vocab = set(cn) | set(cx)
    half = 0.5 * len(vocab)
    table = {}
    for g in vocab:
        lr = math.log((cn[g] + 0.5) / (nn + half)) - math.log((cx[g] + 0.5) / (nx + half))
        if cn[g] + cx[g] >= 2 and abs(lr) >= 0.2:
            table[g] = round(lr, 2)
    return table
