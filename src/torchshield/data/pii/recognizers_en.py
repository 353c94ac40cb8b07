"""English recognisers: US SSN, North-American and international phone numbers, and the
dictionary + shape recognisers for person names and US street addresses."""

from __future__ import annotations

import re
from collections.abc import Iterable

from torchshield.data.pii.lexicon import load_words
from torchshield.data.pii.recognizer import ALNUM, DIGITS, NEG_NUMBER, PatternRecognizer, RawMatch, Recognizer, ScanText, has_context

__all__ = ["EnglishAddressRecognizer", "EnglishNameRecognizer", "en_recognizers"]

CTX_SSN = ("ssn", "social security", "social sec", "ss#", "ss #", "taxpayer")
CTX_PHONE = ("phone", "tel", "call", "mobile", "cell", "fax", "contact", "reach", "dial", "电话", "手机",
             "联系", "text me")

_SSN = r"(?!000|666|9[0-9]{2})[0-9]{3}([- .])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}(?![0-9-]|\.[0-9])"
_SSN_PLAIN = r"(?!000|666|9[0-9]{2})[0-9]{3}(?!00)[0-9]{2}(?!0000)[0-9]{4}(?![0-9])"
_NANP = (r"(?:(?:\+1|001)[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-]?)[2-9][0-9]{2}[ .-]?"
         r"[0-9]{4}(?: ?(?:x|ext\.? ?|#)[0-9]{1,6})?(?![0-9])")
_INTL = r"\+(?!1[^0-9]|86)[2-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}(?![0-9])"
# National (trunk-prefix 0) formats outside North America: 020 7946 0958, 030 1234567,
# 01 23 45 67 89, (02) 9876 5432. Checked against libphonenumber's metadata per region.
_NATIONAL = r"(?:\(0[0-9]{1,4}\)|0[1-9][0-9]{0,3})(?:[ .-]?[0-9]{2,5}){1,4}(?![0-9])"
_NATIONAL_REGIONS = ("GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "IE", "SE", "NO", "DK", "FI", "PL",
                     "PT", "AU", "NZ", "IN", "JP", "KR", "BR", "ZA", "SG", "MX", "TR", "IL")


def _nanp(s: str) -> float:
    digits = re.sub(r"[^0-9]", "", s.split("x")[0].split("#")[0].split("ext")[0])
    formatted = any(c in s for c in " .-()")
    # A bare 10-digit run is as likely an order number as a phone: it needs a phone cue.
    return 0.75 if formatted else (0.35 if len(digits) == 10 else 0.75)


def _intl(s: str) -> float | None:
    digits = sum(c.isdigit() for c in s)
    if not 8 <= digits <= 15:
        return None
    phonenumbers = _phonenumbers()
    if phonenumbers is None:
        return 0.6
    try:
        num = phonenumbers.parse(s, None)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_valid_number(num):
        return 0.75
    return 0.45 if phonenumbers.is_possible_number(num) else None


def _national(s: str) -> float | None:
    digits = sum(c.isdigit() for c in s)
    phonenumbers = _phonenumbers()
    if not 9 <= digits <= 12 or phonenumbers is None:
        return None
    for region in _NATIONAL_REGIONS:
        try:
            num = phonenumbers.parse(s, region)
        except phonenumbers.NumberParseException:
            return None
        if phonenumbers.is_valid_number(num):
            return 0.55
    return None


_PN: list = []


def _phonenumbers():  # type: ignore[no-untyped-def]
    """libphonenumber's metadata (the ``phonenumbers`` package of the ``pii`` extra), or None:
    without it, international numbers fall back to a digit count and national ones are skipped."""
    if not _PN:
        try:
            import phonenumbers
        except ImportError:  # pragma: no cover - the extra is part of `all`
            phonenumbers = None
        _PN.append(phonenumbers)
    return _PN[0]


def en_recognizers() -> list[Recognizer]:
    """Fresh instances of the English recognisers, in priority order."""
    keep = (lambda s: s)  # noqa: E731
    return [
        PatternRecognizer("us_ssn", "US_SSN", _SSN, score=0.85, context=CTX_SSN, context_boost=0.15,
                          flags=re.ASCII, min_digit_run=4, left_boundary=DIGITS + "-."),
        PatternRecognizer("us_ssn_plain", "US_SSN", _SSN_PLAIN, score=0.3, context=CTX_SSN,
                          context_boost=0.55, require_context=True, flags=re.ASCII, min_digit_run=9,
                          left_boundary=DIGITS),
        PatternRecognizer("phone_nanp", "PHONE_NUMBER", _NANP, validator=_nanp, score=0.75,
                          context=CTX_PHONE, context_boost=0.2, flags=re.ASCII, clean=keep, min_digit_run=4,
                          left_boundary=DIGITS + "+"),
        PatternRecognizer("phone_intl", "PHONE_NUMBER", _INTL, validator=_intl, score=0.6,
                          context=CTX_PHONE, context_boost=0.2, invalid_score=None, flags=re.ASCII, clean=keep,
                          needs=("+",), left_boundary=True),
        PatternRecognizer("phone_national", "PHONE_NUMBER", _NATIONAL, validator=_national, score=0.55,
                          context=CTX_PHONE, context_boost=0.3, require_context=True, no_context_score=0.35,
                          invalid_score=None, flags=re.ASCII, clean=keep, min_digit_run=2,
                          left_boundary=ALNUM + "+", negative_context=NEG_NUMBER, languages=("en",)),
        EnglishNameRecognizer(),
        EnglishAddressRecognizer(),
    ]


_TITLES = ("Mr.", "Mrs.", "Ms.", "Miss", "Dr.", "Prof.", "Mr", "Mrs", "Ms", "Dr")
_SUFFIXES = ("Jr.", "Sr.", "II", "III", "IV", "MD", "DDS", "PhD", "DVM", "Esq.")
_WORD = r"[A-Z](?:'[A-Z])?[a-z]+(?:[A-Z][a-z]+)?(?:-[A-Z][a-z]+)?"
_NAME_SEQ = re.compile(
    rf"(?:(?:{'|'.join(re.escape(t) for t in _TITLES)}) )?{_WORD}(?: [A-Z]\.)?(?: {_WORD}){{0,2}}"
    rf"(?: (?:{'|'.join(re.escape(s) for s in _SUFFIXES)})(?![A-Za-z]))?")
_NAME_CTX = ("patient", "name", "dear", "contact", "signed", "customer", "employee", "attn", "applicant",
             "client", "by ", "from ", "to ", "mr", "ms", "spoke with", "姓名", "患者", "联系人")
_NOT_NAME_WORDS = frozenset({
    "The", "This", "That", "Please", "Patient", "Customer", "Employee", "Name", "Dear", "Contact", "Invoice",
    "Order", "Phone", "Email", "Address", "Street", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
    "Saturday", "Sunday", "January", "February", "March", "April", "June", "July", "August", "September",
    "October", "November", "December", "Hospital", "Clinic", "Bank", "Company", "Inc", "Ltd", "Corp",
    "University", "Date", "Card", "Account", "Total", "Amount", "Thanks", "Thank", "Regards", "Best",
    "Applicant", "Client", "Delivery", "Notes", "Note", "Call", "Record", "Mail", "Send", "Suite", "Apt",
})


class EnglishNameRecognizer(Recognizer):
    """Capitalised word sequences anchored on a known given name (US census list), a title
    (Mr./Dr.) or a name cue; surnames from the census list raise the score.

    Unknown given names with no title or cue are missed (recall cost), street and place names
    that start with a given name are usually taken by the address recogniser, which scores
    higher when both overlap."""

    name = "en_person"
    entity_types = frozenset({"PERSON"})
    languages = frozenset({"en"})

    def __init__(self) -> None:
        self._first = load_words("en_first_names")
        self._last = load_words("en_last_names")

    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        text, lower = doc.text, doc.lower
        for m in _NAME_SEQ.finditer(text):
            tokens = m.group(0).split(" ")
            offsets = []
            pos = m.start()
            for t in tokens:
                offsets.append(pos)
                pos += len(t) + 1
            title = tokens[0] in _TITLES
            i = 1 if title else 0
            while i < len(tokens) and tokens[i] in _NOT_NAME_WORDS:
                i += 1
            rest = tokens[i:]
            if not rest or any(t in _NOT_NAME_WORDS for t in rest):
                continue
            first_known = rest[0] in self._first
            core = [t for t in rest if t not in _SUFFIXES and not (len(t) == 2 and t.endswith("."))]
            if not core:
                continue
            last_known = core[-1] in self._last
            if len(core) < 2 and not title:
                continue
            start = offsets[0] if title and i == 1 else offsets[i]
            end = m.end()
            ctx = has_context(lower, start, end, _NAME_CTX, before=16, after=0)
            score = 0.1 + (0.45 if first_known else 0.0) + (0.25 if last_known and len(core) >= 2 else 0.0) \
                + (0.35 if title else 0.0) + (0.15 if ctx else 0.0)
            if score >= 0.3:
                yield RawMatch("PERSON", start, end, min(score, 0.9))


_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|"
           "NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC|AS|GU|MP|PR|VI|AA|AE|AP")


class EnglishAddressRecognizer(Recognizer):
    """US street addresses: number + street words + a USPS suffix (+ unit) (+ city, state, ZIP),
    and military APO/FPO/DPO addresses."""

    name = "en_address"
    entity_types = frozenset({"ADDRESS"})
    languages = frozenset({"en"})

    def __init__(self) -> None:
        suffixes = set(load_words("en_street_suffixes")) | {"St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Pl",
                                                            "Hwy", "Pkwy", "Sq", "Ter", "Cir", "Way"}
        alt = "|".join(sorted(map(re.escape, suffixes), key=len, reverse=True))
        word = r"(?:[A-Z][a-z]+|[0-9]+(?:st|nd|rd|th)|[NSEW]\.?)"
        tail = rf"(?:,? (?:[A-Z][a-z]+ ){{0,2}}[A-Z][a-z]+,? (?:{_STATES}) [0-9]{{5}}(?:-[0-9]{{4}})?)"
        self._street = re.compile(
            rf"[0-9]{{1,6}} (?:{word} ){{1,4}}?(?:{alt})\.?(?![A-Za-z])"
            rf"(?:,? (?:Apt\.|Suite|Unit|Ste\.?|#)(?![A-Za-z]) ?[0-9A-Za-z-]+)?(?P<tail>{tail})?")
        self._military = re.compile(
            r"(?:(?:USNS|USNV|USS|USCGC) [A-Z][a-z]+|(?:PSC|Unit) [0-9]{4},? Box [0-9]{4}),? "
            r"(?:APO|FPO|DPO) (?:AA|AE|AP) [0-9]{5}")

    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        text = doc.text
        if doc.digit_run == 0:
            return
        for m in self._street.finditer(text):
            if m.start() > 0 and text[m.start() - 1].isalnum():
                continue
            yield RawMatch("ADDRESS", m.start(), m.end(), 0.9 if m.group("tail") else 0.7)
        for m in self._military.finditer(text):
            yield RawMatch("ADDRESS", m.start(), m.end(), 0.85)
