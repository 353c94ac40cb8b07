"""Digits after a decimal point are a measurement, not an identifier (found by the report:
float columns such as -0.4532015112830366 passed Luhn and were reported as bank cards)."""

import pytest

from torchshield.data import find_pii


@pytest.mark.parametrize("text", ["0.4532015112830366", "-12.4532015112830366", "x=3.6222020200000000003 mg"])
def test_decimal_fractions_are_not_cards(text):
    assert [f.type for f in find_pii(text)] == []


@pytest.mark.parametrize("text", ["card: 4532015112830366", "No.4532015112830366", "卡号4532015112830366"])
def test_cards_next_to_a_period_or_text_are_still_found(text):
    assert [f.type for f in find_pii(text)] == ["BANK_CARD"]
