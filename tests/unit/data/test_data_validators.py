"""Known-answer tables for the checksum validators (GB 11643, GB 32100, Luhn, IBAN)."""

import pytest

from torchshield.data.pii.validators import (
    card_iin_known,
    cn_id15_valid,
    cn_id_check_char,
    cn_id_valid,
    cn_mobile_prefix_valid,
    iban_valid,
    luhn_valid,
    uscc_valid,
)


@pytest.mark.parametrize("number", ["11010519491231002X", "11010519491231002x", "360426199101010071"])
def test_cn_id_valid(number):
    assert cn_id_valid(number)


@pytest.mark.parametrize("number", [
    "110101199001011234",   # widely copied example: check digit should be 7
    "110105194912310021",   # wrong check character
    "990105194912310024",   # 99 is no province
    "110105194902300020",   # 30 February
    "110105299901010020",   # birth in the future
    "11010519491231002",    # 17 digits
])
def test_cn_id_invalid(number):
    assert not cn_id_valid(number)


def test_cn_id_check_char_matches_standard_formula():
    assert cn_id_check_char("11010119900101123") == "7"


def test_cn_id15():
    assert cn_id15_valid("110105491231002")
    assert not cn_id15_valid("110105491331002")  # month 13


@pytest.mark.parametrize("code,ok", [("91110000600037341L", True), ("91350100M000100Y43", True),
                                     ("91110000600037341M", False), ("9111000060003734IL", False)])
def test_uscc(code, ok):
    assert uscc_valid(code) is ok


@pytest.mark.parametrize("number,ok", [("4111111111111111", True), ("6212260200000000006", True),
                                       ("378282246310005", True), ("4111111111111112", False),
                                       ("1700000000000", False)])
def test_luhn(number, ok):
    assert luhn_valid(number) is ok


def test_card_iin():
    assert card_iin_known("6212260200000000006")
    assert card_iin_known("4111111111111111")
    assert not card_iin_known("1234567812345670")


@pytest.mark.parametrize("iban,ok", [("GB82WEST12345698765432", True), ("GB82 WEST 1234 5698 7654 32", True),
                                     ("DE89370400440532013000", True), ("GB82WEST12345698765433", False),
                                     ("GB82WEST1234569876543", False), ("ZZ82WEST12345698765432", False)])
def test_iban(iban, ok):
    assert iban_valid(iban) is ok


def test_mobile_prefixes():
    assert cn_mobile_prefix_valid("13812345678")
    assert cn_mobile_prefix_valid("19212345678")
    assert not cn_mobile_prefix_valid("14012345678")  # 140-144: IoT numbers
    assert not cn_mobile_prefix_valid("15412345678")
