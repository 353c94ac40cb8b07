"""Language-independent recognisers: bank cards (Luhn + issuer prefix), IBAN (mod 97), email,
URL, IPv4/IPv6, and dates of birth (with a birth cue in English or Chinese)."""

from __future__ import annotations

import datetime as _dt
import re

from torchshield.data.pii.recognizer import ALNUM, DIGITS, NUM_AFTER, PatternRecognizer, Recognizer
from torchshield.data.pii.validators import card_iin_known, iban_length, iban_valid, ip_valid, luhn_valid

__all__ = ["intl_recognizers"]

CTX_CARD = ("卡号", "银行卡", "储蓄卡", "借记卡", "信用卡", "账号", "账户", "开户", "card", "visa",
            "mastercard", "amex", "account", "payment", "paid")
NEG_CARD = ("订单", "单号", "流水", "编号", "order", "tracking", "invoice", "ref", "serial")
CTX_IBAN = ("iban", "account", "bank", "账户", "账号", "汇款")
CTX_IP = ("ip", "host", "address", "地址", "登录", "login", "server", "client")
CTX_DOB = ("出生", "生日", "生于", "birth", "born", "dob", "d.o.b", "birthday")

# Each pattern opens with a one-character lookahead: the engine then rejects most positions on
# one test instead of entering every alternative (the regex passes are most of the scan time).
_CARD = (r"(?=[0-9])(?:[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{4}(?:[ -]?[0-9]{3})?"
         r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}|[0-9]{12,19})" + r"(?![0-9])")
# Fast forms (``fast=``): the same matches, opening with one character class (see recognizer.py).
_CARD_FAST = (r"[0-9](?:[0-9]{3}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{4}(?:[ -]?[0-9]{3})?"
              r"|[0-9]{3}[ -][0-9]{6}[ -][0-9]{4,5}|[0-9]{11,18})(?![0-9])")
_EMAIL_FAST = "[A-Za-z0-9._%+-]"
_IBAN = r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?" + NUM_AFTER
_EMAIL = (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{2,59})"
          r"(?![A-Za-z0-9-])")
_URL = (r"(?<![A-Za-z0-9@.])(?:https?://|www\.)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?"
        r"(?:[/?#][A-Za-z0-9._~%!$&'*+,;=:@/?#-]*[A-Za-z0-9/_~%=#-])?")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])"
_IPV4_FAST = (r"[0-9](?:(?<=2)5[0-5]|(?<=2)[0-4][0-9]|(?<=1)[0-9]{2}|(?<=[1-9])[0-9]|)"
              rf"(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])")
# IPv6, optionally ending in an embedded IPv4 (::ffff:192.0.2.1). Neither side may touch a letter,
# digit, colon or underscore: ``std::cout`` and ``MyClass::toString`` are C++/Java, not addresses.
_IPV6 = (rf"(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:{_OCTET}(?:\.{_OCTET}){{3}}(?![0-9.])|[0-9A-Fa-f]{{0,4}})"
         r"(?![0-9A-Za-z_:])")
_MON = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
        r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DM = r"(?:0?[1-9]|[12][0-9]|3[01])"
# Y-M-D and 年月日; D.M.Y / M/D/Y / M-D-Y (day and month order is ambiguous, both are dates) with
# four- or two-digit years; Mon D, Y; D Mon Y and D-Mon-Y. A birth cue is required in any case.
_DOB = (r"(?=[0-9JFMASONDjfmasond])(?:(?:19|20)[0-9]{2}(?:[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12][0-9]|3[01])"
        r"|年(?:0?[1-9]|1[0-2])月(?:0?[1-9]|[12][0-9]|3[01])日?)"
        rf"|{_DM}([./-]){_DM}\1(?:(?:19|20)[0-9]{{2}}|[0-9]{{2}})"
        rf"|{_MON}\.? [0-9]{{1,2}},? (?:(?:19|20)[0-9]{{2}}|'?[0-9]{{2}})"
        rf"|[0-9]{{1,2}}([ -]){_MON}\.?\2(?:(?:19|20)[0-9]{{2}}|[0-9]{{2}}))(?![0-9])")


def _card(s: str) -> float | None:
    if not luhn_valid(s):
        return None
    # Luhn passes for 1 in 10 random numbers: without a known issuer prefix it needs context.
    # 17/18-digit runs are mostly IDs and order numbers; real cards of those lengths are rare.
    return 0.9 if card_iin_known(s) and len(s) not in (17, 18) else 0.3


def _ip(s: str) -> bool:
    return ip_valid(s)


def _dob(s: str) -> bool:
    years = re.findall(r"(?<![0-9])(?:19|20)[0-9]{2}(?![0-9])", s)
    if years:
        return 1900 <= int(years[0]) <= _dt.date.today().year
    return True  # a two-digit year: any is a plausible birth year


def intl_recognizers() -> list[Recognizer]:
    """Fresh instances of the language-independent recognisers, in priority order."""
    keep = (lambda s: s)  # noqa: E731 - these validators want the match as written
    return [
        PatternRecognizer("email", "EMAIL", _EMAIL, score=1.0, context_boost=0.0, flags=re.ASCII, clean=keep,
                          needs=("@",), left_boundary=ALNUM + "._%+-",
                          fast=_EMAIL_FAST + _EMAIL.replace("[A-Za-z0-9._%+-]+", "[A-Za-z0-9._%+-]*", 1)),
        PatternRecognizer("bank_card", "BANK_CARD", _CARD, validator=_card, score=0.9, context=CTX_CARD,
                          context_boost=0.3, flags=re.ASCII, left_boundary=True, min_digit_run=4,
                          negative_context=NEG_CARD, gate=r"[0-9][0-9]{3}[ -]?[0-9]{4}", fast=_CARD_FAST),
        PatternRecognizer("iban", "IBAN", _IBAN, validator=iban_valid, score=0.95, context=CTX_IBAN,
                          context_boost=0.05, flags=re.ASCII, left_boundary=True, min_digit_run=2,
                          trim=iban_length, gate=r"[A-Z][A-Z][0-9]{2}", fast="[A-Z][A-Z]" + _IBAN[8:]),
        PatternRecognizer("url", "URL", _URL, score=0.85, context_boost=0.0, flags=re.ASCII | re.IGNORECASE,
                          clean=keep, needs=("http", "www.")),
        PatternRecognizer("ipv4", "IP_ADDRESS", _IPV4, validator=_ip, score=0.75, context=CTX_IP,
                          context_boost=0.2, invalid_score=None, flags=re.ASCII, clean=keep,
                          needs=(".",), min_digit_run=1, left_boundary=DIGITS + ".",
                          gate=r"\.[0-9]{1,3}\.", fast=_IPV4_FAST),
        PatternRecognizer("ipv6", "IP_ADDRESS", _IPV6, validator=_ip, score=0.85, context=CTX_IP,
                          context_boost=0.1, invalid_score=None, flags=re.ASCII, clean=keep,
                          needs=(":",), left_boundary=ALNUM + ":_",
                          gate=r":[0-9A-Fa-f]{0,4}:"),
        PatternRecognizer("date_of_birth", "DATE_OF_BIRTH", _DOB, validator=_dob, score=0.55,
                          context=CTX_DOB, context_boost=0.35, require_context=True, no_context_score=0.2,
                          invalid_score=None, flags=re.IGNORECASE, clean=keep, min_digit_run=2,
                          left_boundary=DIGITS),
    ]
