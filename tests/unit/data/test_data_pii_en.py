"""English and international recognisers: valid values found, invalid ones not."""

import pytest

from torchshield.data import find_pii, find_pii_batch, find_pii_dataframe


def found(text):
    return [(f.type, f.text) for f in find_pii(text)]


@pytest.mark.parametrize("text,etype,value", [
    ("SSN 123-45-6789.", "US_SSN", "123-45-6789"),
    ("Phone: (415) 555-2671 x12", "PHONE_NUMBER", "(415) 555-2671 x12"),
    ("call +1-415-555-2671 now", "PHONE_NUMBER", "+1-415-555-2671"),
    ("tel +44 20 7946 0958", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("mail jane.doe@example.co.uk today", "EMAIL", "jane.doe@example.co.uk"),
    ("card 4111 1111 1111 1111 expires", "BANK_CARD", "4111 1111 1111 1111"),
    ("amex 3782-822463-10005", "BANK_CARD", "3782-822463-10005"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("from 192.168.10.20 at", "IP_ADDRESS", "192.168.10.20"),
    ("from 2001:db8::8a2e:370:7334 at", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("see https://example.org/a?b=1.", "URL", "https://example.org/a?b=1"),
    ("Date of birth: March 4, 1987.", "DATE_OF_BIRTH", "March 4, 1987"),
    ("Patient Mary Johnson was seen", "PERSON", "Mary Johnson"),
    ("signed by Dr. Zyx Quorra", "PERSON", "Dr. Zyx Quorra"),
    ("lives at 42 Maple Street Apt. 3, Springfield, IL 62701.", "ADDRESS",
     "42 Maple Street Apt. 3, Springfield, IL 62701"),
])
def test_valid_english_entities(text, etype, value):
    assert (etype, value) in found(text), found(text)


@pytest.mark.parametrize("text", [
    "Ref 000-12-3456",            # SSN area 000 is never issued
    "Ref 666-12-3456",
    "Order #4111111111111112",    # Luhn fails
    "version 999.1.1.1",          # not an IPv4 address
    "at 10:30:45 today",          # a time, not IPv6
    "visit on 2021-03-04",        # a date without a birth cue
    "IBAN GB82WEST12345698765433",
])
def test_invalid_values_not_reported(text):
    assert found(text) == []


def test_context_raises_score():
    plain = find_pii("number 4155552671", min_score=0.0)
    cued = find_pii("phone 4155552671", min_score=0.0)
    assert cued[0].score > plain[0].score
    assert find_pii("number 4155552671") == []  # bare 10 digits need a phone cue


def test_batch_and_dataframe_forms():
    import pandas as pd

    batch = find_pii_batch(["a@b.io", None, "", "SSN 123-45-6789"])
    assert [[f.type for f in fs] for fs in batch] == [["EMAIL"], [], [], ["US_SSN"]]
    df = pd.DataFrame({"phone": ["4155552671", "n/a"], "note": ["mail a@b.io", "ok"]})
    out = find_pii_dataframe(df)
    assert sorted(zip(out["column"], out["type"], strict=True)) == [("note", "EMAIL"), ("phone", "PHONE_NUMBER")]


def test_public_surface_resolves_and_is_sorted():
    import torchshield.data as data

    assert data.__all__ == sorted(data.__all__)
    for name in data.__all__:
        assert getattr(data, name) is not None
