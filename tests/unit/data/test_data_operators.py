"""Operators and policies: reversible tokens round-trip, keyed outputs are stable and key-bound,
and every policy mistake is an InputError naming the field."""

import datetime as dt
import re

import pytest

from torchshield.crypto.keys import generate_master_key
from torchshield.data.anonymize import (
    Anonymizer,
    KeyedContext,
    anonymize_text,
    load_policy,
    make_operator,
    unmask_text,
)
from torchshield.data.anonymize.operators import Cell
from torchshield.data.pii.validators import cn_id_valid, luhn_valid
from torchshield.errors import InputError, KeyMaterialError, WrongKeyError

KEY = generate_master_key()
CTX = KeyedContext(KEY)


def apply(spec, value, entity=None, person=None, keys=CTX):
    return make_operator(spec).apply(value, Cell(entity, person), keys)


def test_encrypt_round_trip_and_determinism():
    a = apply("encrypt", "11010519491231002X")
    assert a == apply("encrypt", "11010519491231002X") and "1101" not in a
    text = f"id {a} and again {a}"
    assert unmask_text(text, KEY) == "id 11010519491231002X and again 11010519491231002X"


def test_unmask_with_wrong_key_fails_loudly():
    token = apply("encrypt", "13812345678")
    with pytest.raises(WrongKeyError):
        unmask_text(token, generate_master_key())


def test_keyed_hash_is_stable_per_key_and_differs_across_keys():
    h1 = apply("hash", "13812345678")
    assert h1 == apply("hash", "13812345678") and re.fullmatch(r"[0-9a-f]{16}", h1)
    assert h1 != apply("hash", "13812345678", keys=KeyedContext(generate_master_key()))
    assert apply({"operator": "hash", "length": 32}, "x") != h1


def test_keyed_operators_refuse_to_run_without_a_key():
    with pytest.raises(KeyMaterialError):
        apply("hash", "13812345678", keys=KeyedContext(None))
    with pytest.raises(KeyMaterialError):
        Anonymizer(load_policy({"default": "hash"}), key=None)


def test_mask_truncate_replace_suppress():
    assert apply({"operator": "mask", "keep_first": 3, "keep_last": 4}, "138 1234 5678") == "138 **** 5678"
    assert apply({"operator": "mask", "keep_first": 3, "keep_last": 20}, "abc") != "abc"  # never fully kept
    assert apply({"operator": "truncate", "length": 6}, "110105194912310020") == "110105"
    assert apply("replace", "x", entity="EMAIL") == "<EMAIL>"
    assert apply({"operator": "replace", "value": "[redacted]"}, "x") == "[redacted]"
    assert apply("suppress", "x") is None


def test_generalize():
    assert apply({"operator": "generalize", "width": 10}, "37") == "30-39"
    assert apply({"operator": "generalize", "level": "month"}, "2024-03-17") == "2024-03"
    assert apply({"operator": "generalize", "level": "year"}, "2024年3月17日") == "2024"
    assert apply({"operator": "generalize", "keep": 6}, "110105194912310020") == "110105" + "*" * 12


def test_date_shift_is_consistent_per_person_and_bounded():
    op = {"operator": "date_shift", "max_days": 10}
    a1, a2 = apply(op, "2024-03-17", person="p1"), apply(op, "2024-03-27", person="p1")
    d1, d2 = dt.date.fromisoformat(a1), dt.date.fromisoformat(a2)
    assert (d2 - d1).days == 10  # intervals within a person survive
    assert abs((d1 - dt.date(2024, 3, 17)).days) <= 10


def test_pseudonyms_are_consistent_realistic_and_valid():
    p1 = apply("pseudonymize", "王小明", entity="PERSON")
    assert p1 == apply("pseudonymize", "王小明", entity="PERSON") and re.fullmatch("[\u4e00-\u9fff]{2,3}", p1)
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", apply("pseudonymize", "Mary Johnson", entity="PERSON"))
    fake_id = apply({"operator": "pseudonymize", "keep_birth_year": True}, "11010519491231002X", entity="CN_RESIDENT_ID")
    assert cn_id_valid(fake_id) and fake_id[6:10] == "1949" and fake_id != "11010519491231002X"
    assert luhn_valid(apply("pseudonymize", "6212260200000000006", entity="BANK_CARD"))


def test_anonymize_text_default_policy_replaces_types():
    out = anonymize_text("患者王小明，手机13812345678，mail a@b.io")
    assert out == "患者<PERSON>，手机<CN_MOBILE>，mail <EMAIL>"


@pytest.mark.parametrize("raw,field", [
    ({"entities": {"PERSON": {"operator": "maskk"}}}, "entities.PERSON.operator"),
    ({"entities": {"NOT_A_TYPE": "replace"}}, "entities.NOT_A_TYPE"),
    ({"columns": {"phone": {"operator": "mask", "keep_frist": 3}}}, "columns.phone"),
    ({"min_score": 3}, "min_score"),
    ({"colums": {}}, "colums"),
    ({"version": 2}, "version"),
    ({"unlisted_columns": "drop"}, "unlisted_columns"),
])
def test_policy_errors_name_the_field(raw, field):
    with pytest.raises(InputError) as exc:
        load_policy(raw, name="p.yaml")
    assert field in str(exc.value) and "p.yaml" in str(exc.value)


def test_policy_missing_column_is_refused():
    pol = load_policy({"columns": {"phnoe": "hash"}})
    with pytest.raises(InputError, match="columns.phnoe"):
        pol.check_columns(["name", "phone"])


def test_policy_hierarchies_validated():
    pol = load_policy({"hierarchies": {"region": {"310104": "上海", "上海": "中国"}}})
    assert pol.hierarchies["region"]["310104"] == "上海"
    with pytest.raises(InputError, match="hierarchies"):
        load_policy({"hierarchies": {"region": ["310104"]}})
