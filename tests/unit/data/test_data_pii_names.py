"""PERSON detection (issue 20): Chinese and English names on seeded labelled corpora, on held-out
names not drawn from the recognisers' lists, the plain contexts the issue listed, and the
engine's second-opinion hook (RawMatch.verify) that runs a model only where candidates are."""

from __future__ import annotations

import pytest

from torchshield.data import find_pii
from torchshield.data.name_corpus import generate_name_records
from torchshield.data.pii import RecognizerRegistry, en_ner
from torchshield.data.pii.evaluate import score_spans
from torchshield.data.pii.recognizer import RawMatch, Recognizer, ScanText

pytest.importorskip("jieba")


def _person_scores(locale: str, source: str, n: int = 400, seed: int = 3) -> dict:
    recs = generate_name_records(n, locale=locale, source=source, seed=seed)
    preds = [[(f.type, f.start, f.end) for f in find_pii(r.text) if f.type == "PERSON"] for r in recs]
    return score_spans([r.spans for r in recs], preds)["PERSON"]


# Bounds sit under the figures measured on these seeds (docs/data.md gives the 1,000-record ones);
# the corpora are seeded, so a drop below them is a regression, not noise.
def test_chinese_names_faker_frames():
    s = _person_scores("zh_CN", "faker")
    assert s["recall"] >= 0.95 and s["precision"] >= 0.95, s


def test_chinese_names_held_out():
    s = _person_scores("zh_CN", "held_out")  # measured 0.931 / 0.994 with jieba's tagger
    assert s["recall"] >= 0.91 and s["precision"] >= 0.95, s


def test_english_names_faker_frames():
    s = _person_scores("en_US", "faker")
    assert s["recall"] >= 0.95 and s["precision"] >= 0.95, s


def test_english_names_held_out_with_the_model():
    if not en_ner.available():
        pytest.skip("spaCy English pipeline (pii-ner extra) not installed")
    s = _person_scores("en_US", "held_out", n=300)  # measured 0.945 / 1.000 (letter shape + spaCy)
    assert s["recall"] >= 0.92 and s["precision"] >= 0.95, s


def test_held_out_names_are_outside_the_generator_list():
    from faker.providers.person.zh_CN import Provider

    from torchshield.data.name_corpus import _ZH_GIVEN_HELD

    assert not set(_ZH_GIVEN_HELD) & set(Provider.first_names)


ISSUE_CASES = [
    ("户名张桂英。", "张桂英"), ("车主杨倩，车牌号京A12345。", "杨倩"), ("样本属于李龙，请核对。", "李龙"),
    ("王建国（身份证：11010519491231002X）申请贷款。", "王建国"), ("User Adam Anderson logged in", "Adam Anderson"),
    ("Mr. Mayers called back", "Mr. Mayers"), ("Hello, my name is Dan", "Dan"),
]


@pytest.mark.parametrize(("text", "name"), ISSUE_CASES)
def test_the_issue_misses_are_found(text, name):
    persons = [f for f in find_pii(text) if f.type == "PERSON"]
    assert [f.text for f in persons] == [name]
    assert persons[0].score >= 0.5


NOT_NAMES = ["高度怀疑肺炎，建议复查。", "上海市黄浦区南京东路100号。", "胡萝卜富含维生素。", "向前走两百米右转。",
             "今天下午三点开会。", "New York General Hospital admitted three patients.", "Dear Sir or Madam,",
             "Order Confirmation: Blue Cotton Shirt, Size Large.", "std::cout is not a name",
             # words jieba's dictionary tags as names, capitalised pairs with no listed name part
             "孔径大小合适。", "毛发稀疏。", "Diagnosis: Type Diabetes, well controlled.", "Re: Project Apollo kickoff.",
             "Shipped via Federal Express to Denver.", "Lunch at Olive Garden with the team.",
             "The Quarterly Review is due.", "Visit Swan Lake Resort this summer."]


@pytest.mark.parametrize("text", NOT_NAMES)
def test_hard_negatives(text):
    assert [f.text for f in find_pii(text) if f.type == "PERSON"] == []


class _Pending(Recognizer):
    """Yields one pending match whose verify counts its calls and returns a fixed verdict."""

    name = "pending"
    entity_types = frozenset({"PERSON"})

    def __init__(self, span, rule_score, verdict):
        self.span, self.rule_score, self.verdict, self.calls = span, rule_score, verdict, 0

    def _verify(self, text, start, end, score):
        self.calls += 1
        assert score == self.rule_score
        return self.verdict

    def analyze(self, doc: ScanText):
        yield RawMatch("PERSON", *self.span, self.rule_score, self._verify)


class _Fixed(Recognizer):
    name = "fixed"
    entity_types = frozenset({"ADDRESS"})

    def __init__(self, span, score):
        self.span, self.score = span, score

    def analyze(self, doc: ScanText):
        yield RawMatch("ADDRESS", *self.span, self.score)


def test_verify_runs_only_for_survivors():
    text = "abc def ghi jkl"
    # overlapped by a higher-scoring finding: the model is never asked
    p = _Pending((0, 7), 0.45, 0.9)
    reg = RecognizerRegistry([_Fixed((0, 11), 0.95), p])
    assert [(f.type, f.text) for f in find_pii(text, registry=reg)] == [("ADDRESS", "abc def ghi")]
    assert p.calls == 0
    # on its own: asked once; its verdict becomes the score
    p = _Pending((0, 7), 0.45, 0.9)
    assert [(f.text, f.score) for f in find_pii(text, registry=RecognizerRegistry([p]))] == [("abc def", 0.9)]
    assert p.calls == 1
    # rejected: dropped, and the lower finding it had displaced comes back
    p = _Pending((0, 7), 0.45, 0.1)
    reg = RecognizerRegistry([_Fixed((4, 11), 0.7), p])
    assert [(f.type, f.text) for f in find_pii(text, registry=reg)] == [("ADDRESS", "def ghi")]
    assert p.calls == 1


def test_letter_shape_model_is_trained_without_the_held_out_names():
    pytest.importorskip("faker")
    from torchshield.data.pii import en_shape

    names, other, held = en_shape.training_words()
    assert len(names) > 10_000 and len(other) > 1_000 and len(held) > 5_000
    assert not names & held  # the held-out corpus's names were never seen in training
    assert set(en_shape.HELD_OUT_LOCALES) >= {"en_IN", "fr_FR", "it_IT", "es_ES", "de_DE", "nl_NL"}
    from torchshield.data.name_corpus import _EN_HELD_LOCALES

    assert set(_EN_HELD_LOCALES) <= set(en_shape.HELD_OUT_LOCALES)


def test_shipped_letter_shape_table_is_what_the_builder_makes():
    pytest.importorskip("faker")
    from torchshield.data.pii import en_shape

    assert en_shape.build_table() == en_shape._table()


def test_letter_shape_separates_names_from_words():
    from torchshield.data.pii.en_shape import word_score

    assert word_score("Gabbana") > 0.5 and word_score("Ossola") > 0.5
    assert word_score("Project") < -1 and word_score("Express") < -1


def test_unknown_names_in_plain_frames_are_found():
    for text, name in [("Authorised signatory Cesare Ossola.", "Cesare Ossola"),
                       ("Beneficiary: Tonino Gabbana", "Tonino Gabbana"),
                       ("康锦程与邵晓萌为夫妻关系。", "康锦程"),
                       ("住院号2024-0315，姓名訾卫东，床号12。", "訾卫东")]:  # 訾 is on no surname list  # 康锦程 scores under 0.5 by rule, jieba confirms
        assert [f.text for f in find_pii(text) if f.type == "PERSON"][:1] == [name], text
