"""English recognisers: US SSN, North-American and international phone numbers, and the
dictionary + shape recognisers for person names and US street addresses."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from torchshield.data.pii import en_ner, en_shape
from torchshield.data.pii.lexicon import load_words
from torchshield.data.pii.recognizer import (
    ALNUM,
    DIGITS,
    NEG_NUMBER,
    PatternRecognizer,
    RawMatch,
    Recognizer,
    ScanText,
)

__all__ = ["EnglishAddressRecognizer", "EnglishNameRecognizer", "en_recognizers"]

CTX_SSN = ("ssn", "social security", "social sec", "ss#", "ss #", "taxpayer")
CTX_PHONE = ("phone", "tel", "call", "mobile", "cell", "fax", "contact", "reach", "dial", "电话", "手机",
             "联系", "text me")

_SSN = r"(?=[0-9])(?!000|666|9[0-9]{2})[0-9]{3}([- .])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}(?![0-9-]|\.[0-9])"
_SSN_PLAIN = r"(?=[0-9])(?!000|666|9[0-9]{2})[0-9]{3}(?!00)[0-9]{2}(?!0000)[0-9]{4}(?![0-9])"
_NANP = (r"(?=[+(0-9])(?:(?:\+1|001)[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-]?)[2-9][0-9]{2}[ .-]?"
         r"[0-9]{4}(?: ?(?:x|ext\.? ?|#)[0-9]{1,6})?(?![0-9])")
# Fast forms (``fast=``): the same matches, opening with one character class (see recognizer.py);
# ``(?<!0(?=00))`` after the first digit says "not 000", as (?!000) said before it.
_AREA_FAST = r"[0-8](?<!0(?=00))(?<!6(?=66))[0-9]{2}"
_SSN_FAST = _AREA_FAST + r"([- .])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}(?![0-9-]|\.[0-9])"
_SSN_PLAIN_FAST = _AREA_FAST + r"(?!00)[0-9]{2}(?!0000)[0-9]{4}(?![0-9])"
_NANP_AREA = r"(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-]?)"
_NANP_FAST = (r"[+(0-9](?:(?:(?<=\+)1|(?<=0)01)[ .-]?" + _NANP_AREA
              + r"|(?<=\()[2-9][0-9]{2}\) ?|(?<=[2-9])[0-9]{2}[ .-]?)[2-9][0-9]{2}[ .-]?"
              r"[0-9]{4}(?: ?(?:x|ext\.? ?|#)[0-9]{1,6})?(?![0-9])")
_INTL = r"\+(?!1[^0-9]|86)[2-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}(?![0-9])"
# National (trunk-prefix 0) formats outside North America: 020 7946 0958, 030 1234567,
# 01 23 45 67 89, (02) 9876 5432. Checked against libphonenumber's metadata per region.
# A bare trunk 0 starts after a space, a colon, a parenthesis or the text's start (Tel: 020 ...).
_NATIONAL = r"(?=[(0])(?:\(0[0-9]{1,4}\)|(?<![^\s:(])0[1-9][0-9]{0,3})(?:[ .-]?[0-9]{2,5}){1,4}(?![0-9])"
_NATIONAL_FAST = (r"[(0](?:(?<=\()0[0-9]{1,4}\)|(?<![^\s:(]0)(?<=0)[1-9][0-9]{0,3})(?:[ .-]?[0-9]{2,5}){1,4}"
                  r"(?![0-9])")
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


def _phonenumbers() -> Any:
    """libphonenumber's metadata (the ``phonenumbers`` package of the ``pii`` extra), or None:
    without it, international numbers fall back to a digit count and national ones are skipped."""
    if not _PN:
        module: Any
        try:
            import phonenumbers

            module = phonenumbers
        except ImportError:  # pragma: no cover - the extra is part of `all`
            module = None
        _PN.append(module)
    return _PN[0]


def en_recognizers() -> list[Recognizer]:
    """Fresh instances of the English recognisers, in priority order."""
    keep = (lambda s: s)  # noqa: E731
    return [
        PatternRecognizer("us_ssn", "US_SSN", _SSN, score=0.85, context=CTX_SSN, context_boost=0.15,
                          flags=re.ASCII, min_digit_run=4, left_boundary=DIGITS + "-.",
                          gate=r"[0-9][0-9]{2}[- .][0-9]{2}[- .][0-9]{4}", fast=_SSN_FAST),
        PatternRecognizer("us_ssn_plain", "US_SSN", _SSN_PLAIN, score=0.3, context=CTX_SSN,
                          context_boost=0.55, require_context=True, flags=re.ASCII, min_digit_run=9,
                          left_boundary=DIGITS, fast=_SSN_PLAIN_FAST),
        PatternRecognizer("phone_nanp", "PHONE_NUMBER", _NANP, validator=_nanp, score=0.75,
                          context=CTX_PHONE, context_boost=0.2, flags=re.ASCII, clean=keep, min_digit_run=4,
                          left_boundary=DIGITS + "+", gate=r"[0-9][0-9]{2}(?:\) ?|[ .-])?[0-9]{3}[ .-]?[0-9]{4}",
                          fast=_NANP_FAST),
        PatternRecognizer("phone_intl", "PHONE_NUMBER", _INTL, validator=_intl, score=0.6,
                          context=CTX_PHONE, context_boost=0.2, invalid_score=None, flags=re.ASCII, clean=keep,
                          needs=("+",), left_boundary=True),
        PatternRecognizer("phone_national", "PHONE_NUMBER", _NATIONAL, validator=_national, score=0.55,
                          context=CTX_PHONE, context_boost=0.3, require_context=True, no_context_score=0.35,
                          invalid_score=None, flags=re.ASCII, clean=keep, min_digit_run=2,
                          left_boundary=ALNUM + "+-/.", negative_context=NEG_NUMBER, languages=("en",),
                          gate=r"0(?<![0-9A-Za-z+/.-]0)[1-9]|\(0", fast=_NATIONAL_FAST),
        EnglishNameRecognizer(),
        EnglishAddressRecognizer(),
    ]


_TITLES = ("Mr.", "Mrs.", "Ms.", "Miss", "Dr.", "Prof.", "Mr", "Mrs", "Ms", "Dr", "Mx.", "Mx", "Sir", "Dame")
_SUFFIXES = ("Jr.", "Sr.", "II", "III", "IV", "MD", "DDS", "PhD", "DVM", "Esq.")
_UP = "A-ZÀ-ÖØ-Þ"
_LO = "a-zß-öø-ÿ"
_WORD = rf"(?:Mc|Mac|O'|D'|O’)?[{_UP}][{_LO}]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}][{_LO}]+)?"
_PARTICLES = ("van der", "van den", "van de", "van", "von", "de la", "de", "der", "den", "da", "di", "del", "della",
              "du", "dos", "das", "le", "la", "bin", "ibn", "al", "ter", "ten")
_PARTICLE = "|".join(re.escape(p) for p in _PARTICLES)
# The leading lookahead lets the engine reject a position on one character test instead of trying
# every title and prefix there (13.3 -> about 4 us a record on the benchmark corpus).
_NAME_SEQ = re.compile(
    rf"(?=[{_UP}])(?:(?:{'|'.join(re.escape(t) for t in _TITLES)}) )?{_WORD}(?: [A-Z]\.)?(?: (?:(?:{_PARTICLE}) )?{_WORD}){{0,3}}"
    rf"(?: (?:{'|'.join(re.escape(s) for s in _SUFFIXES)})(?![A-Za-z]))?")
# Words right before a name that say a person follows (matched on the lower-cased text).
_STRONG_CUES = ("patient", "user", "customer", "client", "employee", "dear", "hi", "hello", "thanks,", "thanks",
                "thank you,", "cc:", "cc", "attn:", "attn", "signed by", "reviewed by", "approved by", "by",
                "spoke with", "met with", "meeting with", "with", "name:", "name is", "my name is", "i am",
                "i'm", "this is", "contact", "applicant", "account holder:", "holder:", "assigned to", "forward this to",
                "to", "for", "from", "according to", "mr", "ms", "姓名", "患者", "联系人", "regards,", "sincerely,")
_CUES = frozenset(c.rstrip(":,") for c in _STRONG_CUES)


def _has_cue(before: str) -> bool:
    """Whether the (lower-cased) text before a candidate ends with a cue of one to three words."""
    words = before.rstrip(" :,").split()[-3:]
    return any(" ".join(words[-k:]).rstrip(":,") in _CUES for k in (1, 2, 3) if k <= len(words))
# Capitalised words that are not names, or that make a sequence an organisation or a place.
_NOT_NAME_WORDS = frozenset({
    "The", "This", "That", "These", "Those", "Please", "Patient", "Customer", "Employee", "Name", "Dear", "Contact",
    "Invoice", "Order", "Phone", "Email", "Address", "Street", "Monday", "Tuesday", "Wednesday", "Thursday",
    "Friday", "Saturday", "Sunday", "January", "February", "March", "April", "June", "July", "August",
    "September", "October", "November", "December", "Hospital", "Clinic", "Bank", "Company", "Inc", "Ltd", "Corp",
    "University", "Date", "Card", "Account", "Total", "Amount", "Thanks", "Thank", "Regards", "Best", "Applicant",
    "Client", "Delivery", "Notes", "Note", "Call", "Record", "Mail", "Send", "Suite", "Apt", "User", "Hi", "Hello",
    "Meeting", "Service", "Services", "Center", "Centre", "Department", "County", "State", "States", "United",
    "National", "General", "Medical", "Health", "Church", "Park", "Bridge", "Union", "Credit", "Library",
    "Motor", "Electric", "Web", "Version", "Control", "System", "Plan", "Report", "Annual", "Study", "Proceedings",
    "Advisors", "Preferred", "Postal", "Emergency", "Room", "Size", "Large", "Blue", "Confirmation", "Income",
    "Taxes", "Before", "After", "Morning", "Evening", "Christmas", "Eve", "Grand", "Canyon", "Golden", "Gate",
    "River", "Valley", "Memorial", "Saint", "New", "San", "Los", "Las", "North", "South", "East", "West", "Lake",
    "Mount", "Port", "Fort", "Sir", "Madam", "Revenue", "Outage", "Migration", "Benefits", "Cotton", "Shirt",
    "Heart", "Rate", "Blood", "Pressure", "Normal", "Stable", "Support", "Team", "Office", "Group",
    "Mayo", "Wells", "Fargo", "Chase", "Amazon", "Apple", "Microsoft", "Google", "Washington", "York", "Angeles",
    "Francisco", "Virginia", "Ohio", "Texas", "California", "Florida", "Baptist", "First", "Net", "Sapphire",
    "Admission", "Discharge", "Summary", "Consult", "Wire", "Transfer", "Beneficiary", "Branch", "Manager",
    "Radiology", "Statement", "Follow", "Authorised", "Authorized", "Signatory", "Reviewed", "Signed",
    "Assigned", "According", "Holder", "Is", "Are", "Was", "If", "When", "And", "Or", "But", "For",
    "With", "From", "To", "In", "On", "At", "By", "Of", "As", "My", "Our", "Your", "Their", "His", "Her", "We",
    "You", "It", "He", "She", "They", "I", "Yes", "No", "Not", "All", "Any", "Some", "Each", "Every", "Today",
    "Tomorrow", "Yesterday", "Mrs", "Mr", "Ms", "Dr", "Prof", "Professor", "Nurse", "Doctor", "Officer",
})
_PENDING = 0.45  # rule score of a capitalised sequence that only the model can confirm
_CONFIRMED = 0.8


class EnglishNameRecognizer(Recognizer):
    """Capitalised word sequences (Unicode letters, particles such as van/de/bin), scored by
    known given names and surnames (US census lists), a title (Mr./Dr.), a cue before (Patient,
    Dear, my name is, signed by, with, to) and words that make a sequence an organisation or a place.

    Sequences the rules cannot settle (no known name part, no title; ``Ravi Shroff``, ``Ifeoma
    Obi``) are passed to a statistical NER model, spaCy's ``en_core_web_sm`` pipeline shipped as
    a package (the ``pii-ner`` extra), through ``verify``: the engine asks it only for candidates
    that survive overlap resolution, on the sentence around each, so its cost (~2-6 ms a call) is
    paid on few records. Without spaCy those sequences keep their rule score (under the default
    threshold when no cue supports them)."""

    name = "en_person"
    entity_types = frozenset({"PERSON"})
    languages = frozenset({"en"})

    def __init__(self) -> None:
        self._first = load_words("en_first_names")
        self._last = load_words("en_last_names")
        self._street = load_words("en_street_suffixes")
        self._plans: dict[str, _Plan | None] = {}

    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        text, lower = doc.text, doc.lower
        plans = self._plans
        for m in _NAME_SEQ.finditer(text):
            seq = m.group(0)
            plan = plans.get(seq, _UNPLANNED)
            if plan is _UNPLANNED:
                plan = self._plan(seq)
                if len(plans) >= _PLAN_CACHE:
                    plans.clear()
                plans[seq] = plan
            if plan is None:
                continue
            start = m.start()
            if _HOUSE_NUMBER.search(text, max(0, start - 8), start) is not None:
                continue  # 988 Keith Coves: a street
            hit = _decide(plan, text, lower, start + plan[0], m.end())
            if hit is not None:
                yield hit

    def _plan(self, seq: str) -> _Plan | None:
        """What the words of a capitalised sequence say, whatever surrounds it (memoised per
        sequence: Phone, Address, Order and most names recur in a table): None when it is no
        name, else where the name starts in it and which of its parts are known."""
        first, last = self._first, self._last
        if " " not in seq and seq not in first and seq not in last:
            return None  # one unknown word (Patient, Phone, Order): never a name on its own
        tokens = seq.split(" ")
        title = tokens[0] in _TITLES
        i = 1 if title else 0
        known = first.__contains__
        while i < len(tokens) and tokens[i] in _NOT_NAME_WORDS and not (
                known(tokens[i]) and i + 1 < len(tokens) and tokens[i + 1] in last):
            i += 1  # leading "Patient", "Dear" (but April Brown is a name)
        rest = tokens[i:]
        if not rest:
            return None
        # An organisation or place word inside the sequence (New York General Hospital) rules it
        # out, unless it is a known name next to another known name part (Anne Washington).
        for j, t in enumerate(rest):
            if t in _NOT_NAME_WORDS and not (
                    (t in last or known(t)) and any(known(u) or u in last
                                                    for k, u in enumerate(rest) if k != j)):
                return None
        core = [t for t in rest if t not in _SUFFIXES and t not in _BARE_SUFFIXES
                and not (len(t) == 2 and t.endswith(".")) and t not in _PARTICLE_WORDS]
        if not core or (core[-1] in self._street and core[-1] not in last):
            return None
        offset = 0 if title and i == 1 else sum(len(t) + 1 for t in tokens[:i])
        # How name-like the parts no list knows are, from their letters (en_shape): the least
        # name-like one speaks for the sequence.
        shape = min((en_shape.word_score(t) for t in core if t not in first and t not in last), default=9.0)
        return (offset, title, len(core) == 1 and not title, core[0] in first, core[-1] in last,
                core[0] in last, shape)


_UNPLANNED: Any = object()
_PLAN_CACHE = 1 << 16
# (offset of the name in the sequence, title, a single word, first part a known given name, last
# part a known surname, first part a known surname, letter shape of the unknown parts)
_Plan = tuple[int, bool, bool, bool, bool, bool, float]
_SHAPE_NAME = -0.3  # letter-shape score from which unknown parts look like a name
_SHAPED = 0.55  # rule score of such a sequence (spaCy's place or product label still rules it out)


def _decide(plan: _Plan, text: str, lower: str, s: int, end: int) -> RawMatch | None:
    """The score of a planned sequence at ``s``: the parts that depend on the text around it."""
    _, title, single, first_known, last_known, first_is_surname, shape = plan
    cue = _has_cue(lower[max(0, s - 20):s])
    if single:
        # A single word is a name only after a cue (Hi Dan, my name is Dan) and when it is a
        # known given name or surname.
        if cue and not _sentence_start(text, s) and (first_known or first_is_surname):
            return RawMatch("PERSON", s, end, 0.75)
        return None
    if title:
        return RawMatch("PERSON", s, end, 0.85 if (first_known or last_known or cue) else 0.8)
    score = 0.1 + (0.45 if first_known else 0.0) + (0.3 if last_known else 0.0) + (0.2 if cue else 0.0)
    if not first_known and not last_known:
        # Nothing known: a person, a place or an organisation. A cue (with, by, for, Dear)
        # makes it a name unless the model says place; without one only the model's PERSON does.
        if shape >= _SHAPE_NAME:
            return RawMatch("PERSON", s, end, _SHAPED + (0.1 if cue else 0.0), _verify_shaped)
        return RawMatch("PERSON", s, end, _PENDING + (0.1 if cue else 0.0), _verify_person)
    if score < 0.7:
        if shape >= _SHAPE_NAME:
            return RawMatch("PERSON", s, end, max(score, _SHAPED), _verify_shaped)
        return RawMatch("PERSON", s, end, score, _verify_person)
    return RawMatch("PERSON", s, end, min(score, 0.95))


_BARE_SUFFIXES = frozenset({"Jr", "Sr"})
_HOUSE_NUMBER = re.compile(r"[0-9]+[A-Za-z]? $")
_PARTICLE_WORDS = frozenset(w for p in _PARTICLES for w in p.split())


def _sentence_start(text: str, s: int) -> bool:
    j = s - 1
    while j >= 0 and text[j] in " \t\"'(":
        j -= 1
    return j < 0 or text[j] in ".!?\n:;"


_PLACE_LABELS = frozenset({"GPE", "LOC", "FAC", "NORP", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"})


def _verify_person(text: str, start: int, end: int, score: float) -> float:
    """The model's verdict on a pending PERSON candidate. A PERSON over most of it confirms it
    (``_CONFIRMED``); a place, product or event rules it out. ``en_core_web_sm`` labels many names
    it has not seen (Gino Henck, Custodio Águila) ORG or nothing, so those verdicts leave the
    rule score as it is. Without the model, the rule score stands."""
    return _model_verdict(text, start, end, score, _PLACE_LABELS)


_NOT_PERSON_LABELS = frozenset({"FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"})


def _verify_shaped(text: str, start: int, end: int, score: float) -> float:
    """The model's verdict on a sequence whose letters look like a name: PERSON confirms, a
    building, product, event or work rules it out. A place or nationality label does not:
    ``en_core_web_sm`` calls many names it has not seen GPE or NORP (Genoveva Sandoval, Isaura
    Puente), and place names rarely have a name's letter shape or pass the word lists."""
    return _model_verdict(text, start, end, score, _NOT_PERSON_LABELS)


def _model_verdict(text: str, start: int, end: int, score: float, ruled_out: frozenset[str]) -> float:
    """spaCy's entity over most of ``text[start:end]``: PERSON raises the score to ``_CONFIRMED``,
    a label in ``ruled_out`` lowers it to 0.3; no model (or no such entity) leaves it as it is."""
    ents = en_ner.entity_spans(text, start, end)
    if ents is None:
        return score
    for a, b, label in ents:
        if min(b, end) - max(a, start) >= 0.5 * (end - start):
            if label == "PERSON":
                return max(score, _CONFIRMED)
            if label in ruled_out:
                return min(score, 0.3)
    return score


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
        rest = (rf" (?:{word} ){{1,4}}?(?:{alt})\.?(?![A-Za-z])"
                rf"(?:,? (?:Apt\.|Suite|Unit|Ste\.?|#)(?![A-Za-z]) ?[0-9A-Za-z-]+)?(?P<tail>{tail})?")
        self._street = re.compile(rf"[0-9]{{1,6}}{rest}")
        self._street_fast = re.compile(rf"[0-9][0-9]{{0,5}}{rest}")
        self._military = re.compile(
            r"(?:(?:USNS|USNV|USS|USCGC) [A-Z][a-z]+|(?:PSC|Unit) [0-9]{4},? Box [0-9]{4}),? "
            r"(?:APO|FPO|DPO) (?:AA|AE|AP) [0-9]{5}")
        self._military_fast = re.compile(
            r"[UP](?:(?<=U)(?:SNS|SNV|SS|SCGC) [A-Z][a-z]+|(?<=P)SC [0-9]{4},? Box [0-9]{4}"
            r"|(?<=U)nit [0-9]{4},? Box [0-9]{4}),? (?:APO|FPO|DPO) (?:AA|AE|AP) [0-9]{5}")

    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        text = doc.text
        ref = doc.reference
        if not ref and doc.digit_run == 0:
            return  # both patterns hold digits
        for m in (self._street if ref else self._street_fast).finditer(text):
            if m.start() > 0 and text[m.start() - 1].isalnum():
                continue
            yield RawMatch("ADDRESS", m.start(), m.end(), 0.9 if m.group("tail") else 0.7)
        if ref or "PO " in text:  # APO / FPO / DPO
            for m in (self._military if ref else self._military_fast).finditer(text):
                yield RawMatch("ADDRESS", m.start(), m.end(), 0.85)
