"""Checksums and semantic checks that separate PII from numbers that merely look like it.

Order numbers, timestamps and tracking codes have the right length but fail these checks;
that is most of the precision of a pattern-based detector. Each validator takes the
separator-free ASCII string and returns ``True``/``False``; none raises on junk input.

Sources: GB 11643-1999 (resident ID, ISO 7064 MOD 11-2), GB 32100-2015 (USCC, mod 31) with
GB 11714 (organisation code), ISO/IEC 7812 (Luhn), ISO 13616 (IBAN, mod 97)."""

from __future__ import annotations

import datetime as _dt
import ipaddress

__all__ = [
    "CN_PROVINCE_CODES",
    "cn_id15_valid",
    "cn_id_birth_date",
    "cn_id_check_char",
    "cn_id_valid",
    "cn_mobile_prefix_valid",
    "card_iin_known",
    "iban_length",
    "iban_valid",
    "ip_valid",
    "luhn_valid",
    "luhn_check_digit",
    "strip_separators",
    "gb11714_check_char",
    "uscc_check_char",
    "uscc_structure_valid",
    "uscc_valid",
]

# GB/T 2260 province-level codes (positions 1-2, 71 = Taiwan as GB/T 2260 lists it), plus
# 81/82/83 for HK/Macau/Taiwan residence permits (same number format, 2018).
CN_PROVINCE_CODES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
     50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83})

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def strip_separators(s: str) -> str:
    return s.replace(" ", "").replace("-", "")


def cn_id_check_char(first17: str) -> str:
    """GB 11643 check character for the first 17 digits (ISO 7064 MOD 11-2)."""
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def cn_id_birth_date(number: str) -> _dt.date | None:
    """The birth date encoded in an 18-digit ID, or None if it is not a real past date."""
    try:
        d = _dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None
    if d.year < 1900 or d > _dt.date.today():
        return None
    return d


def cn_id_valid(number: str) -> bool:
    """18-digit resident ID: province prefix, real birth date, MOD 11-2 check character."""
    if len(number) != 18 or not number[:17].isdigit() or not number.isascii():
        return False
    if int(number[:2]) not in CN_PROVINCE_CODES or cn_id_birth_date(number) is None:
        return False
    return cn_id_check_char(number[:17]) == number[17].upper()


def cn_id15_valid(number: str) -> bool:
    """15-digit legacy ID (no check digit): province prefix and a real 19YY birth date."""
    if len(number) != 15 or not number.isdigit() or not number.isascii():
        return False
    if int(number[:2]) not in CN_PROVINCE_CODES:
        return False
    try:
        _dt.date(1900 + int(number[6:8]), int(number[8:10]), int(number[10:12]))
    except ValueError:
        return False
    return True


# MIIT mobile allocations (first three digits), see reference/cn-pii-rules.md 4.5.
_MOBILE_PREFIXES = frozenset(
    [f"13{d}" for d in range(10)] + [f"14{d}" for d in range(5, 10)]
    + [f"15{d}" for d in (0, 1, 2, 3, 5, 6, 7, 8, 9)] + ["162", "165", "166", "167"]
    + [f"17{d}" for d in range(9)] + [f"18{d}" for d in range(10)]
    + [f"19{d}" for d in (0, 1, 2, 3, 5, 6, 7, 8, 9)])


def cn_mobile_prefix_valid(number11: str) -> bool:
    return number11[:3] in _MOBILE_PREFIXES


def luhn_check_digit(payload: str) -> str:
    """The Luhn digit that makes ``payload + digit`` valid."""
    total = 0
    for i, c in enumerate(reversed(payload)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    if not number.isdigit() or not number.isascii() or len(number) < 2:
        return False
    return luhn_check_digit(number[:-1]) == number[-1]


def card_iin_known(number: str) -> bool:
    """Issuer prefix of a payment card network we know (UnionPay, Visa, Mastercard, AmEx,
    JCB, Discover, Diners, Maestro) with a length that network issues."""
    n = len(number)
    p2, p4, p6 = int(number[:2]), int(number[:4]), int(number[:6])
    if number[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p2 == 62 or p2 == 81:  # UnionPay (81: UnionPay 2016+ range)
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if p4 == 6011 or p2 == 65 or 644 <= p6 // 1000 <= 649:
        return 16 <= n <= 19
    if p2 in (36, 38) or 300 <= p6 // 1000 <= 305:
        return 14 <= n <= 19
    if p2 in (50, 56, 57, 58) or int(number[:3]) == 639 or p4 in (6759, 6761, 6762, 6763):  # Maestro
        return 12 <= n <= 19
    return False


_IBAN_LENGTHS = {
    "AL": 28, "BI": 27, "BY": 28, "DJ": 27, "FK": 18, "HN": 28, "LY": 25, "MN": 20, "NI": 28, "OM": 23,
    "RU": 33, "SD": 18, "SO": 23, "YE": 30,
    "AD": 24, "AE": 23, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31,
    "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_length(text: str) -> int:
    """How many characters of ``text`` (an IBAN as written, maybe with spaces, maybe followed by
    more characters) the IBAN takes: its country's length in letters and digits, or all of it
    for an unknown country."""
    want = _IBAN_LENGTHS.get(text[:2].upper())
    if want is None:
        return len(text)
    seen = 0
    for i, c in enumerate(text):
        if c.isalnum():
            seen += 1
            if seen == want:
                # only where a separator follows: a longer run is not an IBAN plus a tail
                return i + 1 if i + 1 == len(text) or not text[i + 1].isalnum() else len(text)
    return len(text)


def iban_valid(iban: str) -> bool:
    """ISO 13616: known country, its length, and the mod-97 check equal to 1."""
    s = strip_separators(iban).upper()
    if _IBAN_LENGTHS.get(s[:2]) != len(s) or not s.isalnum() or not s.isascii():
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_char(first17: str) -> str:
    """GB 32100 check character (weights 3^(i-1) mod 31 over the 31-character alphabet)."""
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_valid(code: str) -> bool:
    """Unified social credit code: alphabet, digit region code (positions 3-8), check character
    (mod 31). This is the check python-stdnum's ``cn.uscc`` makes; 1 in 31 random 18-digit runs
    passes it, so the recogniser also asks for ``uscc_structure_valid``."""
    s = code.upper()
    if len(s) != 18 or any(c not in _USCC_ALPHABET for c in s) or not s[2:8].isdigit():
        return False
    return uscc_check_char(s[:17]) == s[17]


_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def gb11714_check_char(body8: str) -> str:
    """GB 11714 organisation-code check character for the 8-character body (weights 3 7 9 10 5 8 4 2,
    mod 11; 10 -> X, 11 -> 0). Letters count as 10..35, as in the standard."""
    total = sum(int(c, 36) * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True))
    c9 = 11 - total % 11
    return "X" if c9 == 10 else "0" if c9 == 11 else str(c9)


def uscc_structure_valid(code: str) -> bool:
    """The parts of a USCC that the mod-31 check leaves unchecked: a digit category code (position
    2; every GB 32100 category is a digit, the list grows so its values are not pinned), a region code (positions 3-8) whose province is a GB/T 2260
    province (or 10, the central registry), and the inner GB 11714 organisation code (positions
    9-17) with its own check digit. An 18-digit order number that passes mod 31 by chance passes
    these about once in 35 times (measured in tests/unit/data/test_data_pii_precision.py); negative
    cue words (订单号, Order) catch most of the rest."""
    s = code.upper()
    if not uscc_valid(s):
        return False
    if s[1] not in "123456789":
        return False
    prov = int(s[2:4])
    if prov not in CN_PROVINCE_CODES and s[2:8] != "100000":
        return False
    if any(c not in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" for c in s[8:16]):
        return False
    return gb11714_check_char(s[8:16]) == s[16]


def ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
