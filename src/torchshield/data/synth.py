"""Seeded synthetic data with ground truth: labelled free-text records (Chinese and English,
with decoys that must not match) and a patient table for the demos and benchmarks.

Everything comes from Faker (zh_CN / en_US) plus generators for the numbers Faker lacks
(USCC, passports, permits, 19-digit UnionPay cards); checksums are computed, not faked.
Nothing here is real personal data."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchshield.data.pii.validators import (
    cn_id_check_char,
    gb11714_check_char,
    luhn_check_digit,
    uscc_check_char,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["LabeledRecord", "generate_records", "patient_table"]


@dataclass
class LabeledRecord:
    """A text and its gold PII spans ``(type, start, end)``."""

    text: str
    spans: list[tuple[str, int, int]] = field(default_factory=list)


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[tuple[str, int, int]] = []
        self.n = 0

    def lit(self, s: str) -> None:
        self.parts.append(s)
        self.n += len(s)

    def pii(self, etype: str, s: str) -> None:
        self.spans.append((etype, self.n, self.n + len(s)))
        self.lit(s)

    def build(self) -> LabeledRecord:
        return LabeledRecord("".join(self.parts), self.spans)


def _faker(locale: str, seed: int) -> Any:
    from faker import Faker

    f = Faker(locale)
    f.seed_instance(seed)
    return f


_USCC_ALPHA = "0123456789ABCDEFGHJKLMNPQRTUWXY"


_REGIONS = ("110105", "310104", "440305", "330106", "510107", "420102", "610113", "320102", "370202", "500103")


def fake_uscc(rng: random.Random) -> str:
    """A USCC as GB 32100 builds it: authority + category, region, a GB 11714 organisation code
    (8 characters + its check digit), then the mod-31 check character. (It draws from ``rng`` as
    many times as the earlier generator did, so the seeded corpora keep their other values.)"""
    head = rng.choice(["91", "92", "93", "11", "12", "51", "52"]) + _REGIONS[rng.randint(110000, 659999) % 10]
    org = "".join(rng.choice(_USCC_ALPHA) for _ in range(9))[:8]
    org += gb11714_check_char(org)
    return head + org + uscc_check_char(head + org)


def fake_unionpay(rng: random.Random, length: int = 19) -> str:
    payload = "62" + "".join(str(rng.randint(0, 9)) for _ in range(length - 3))
    return payload + luhn_check_digit(payload)


def fake_cn_id(rng: random.Random, birth_year: int | None = None) -> str:
    region = rng.choice(["110105", "310104", "440305", "330106", "510107", "420102", "610113", "320102"])
    y = birth_year or rng.randint(1940, 2010)
    body = f"{region}{y:04d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    return body + cn_id_check_char(body)


def _bad_checksum(good: str, alphabet: str = "0123456789") -> str:
    last = good[-1]
    return good[:-1] + next(c for c in alphabet if c != last)


def _zh_decoy(f: Any, rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"订单号{_bad_checksum(fake_cn_id(rng))}"
    if kind == 1:
        return f"时间戳{rng.randint(1_600_000_000_000, 1_800_000_000_000)}"
    if kind == 2:
        return f"快递单号SF{rng.randint(10**12, 10**13 - 1)}"
    if kind == 3:
        card = fake_unionpay(rng, 16)
        return f"流水号{_bad_checksum(card)}"
    return f"就诊日期{rng.randint(2015, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _en_decoy(f: Any, rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        payload = "45" + "".join(str(rng.randint(0, 9)) for _ in range(13))
        return f"Order #{_bad_checksum(payload + luhn_check_digit(payload))}"  # Luhn fails
    if kind == 1:
        return f"Ref {rng.choice(['000', '666', '900'])}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
    if kind == 2:
        return f"Tracking 1Z{rng.randint(10**15, 10**16 - 1)}"
    return f"Visit on {f.date_between('-3y', 'today').isoformat()}"


def _zh_record(f: Any, rng: random.Random) -> LabeledRecord:
    b = _Builder()
    t = rng.randrange(7)
    name, idn, mob = f.name(), f.ssn(), f.phone_number()
    if t == 0:
        b.lit("患者"); b.pii("PERSON", name); b.lit("，身份证号"); b.pii("CN_RESIDENT_ID", idn)
        b.lit("，手机"); b.pii("CN_MOBILE", mob); b.lit("，住址"); b.pii("ADDRESS", f.address()); b.lit("。")
    elif t == 1:
        b.lit("申请人"); b.pii("PERSON", name); b.lit("（身份证："); b.pii("CN_RESIDENT_ID", idn)
        b.lit("）使用卡号为"); b.pii("BANK_CARD", rng.choice([f.credit_card_number(), fake_unionpay(rng)]))
        b.lit("的银行卡还款，联系电话"); b.pii("CN_MOBILE", mob); b.lit("。")
    elif t == 2:
        b.lit("经核实，"); b.pii("PERSON", name); b.lit("的身份证号码为"); b.pii("CN_RESIDENT_ID", idn)
        b.lit("，名下银行卡"); b.pii("BANK_CARD", f.credit_card_number()); b.lit("存在异常交易。")
    elif t == 3:
        area = rng.choice(["010", "021", "0571", "0755", "028"])
        local = f"{rng.randint(2, 9)}{rng.randint(0, 9999999):07d}"
        b.lit("联系人："); b.pii("PERSON", name); b.lit("，邮箱"); b.pii("EMAIL", f.email())
        b.lit("，办公电话"); b.pii("CN_LANDLINE", f"{area}-{local}"); b.lit("，车牌号")
        b.pii("CN_LICENSE_PLATE", f.license_plate()); b.lit("。")
    elif t == 4:
        dob = f.date_of_birth(minimum_age=1, maximum_age=90)
        b.lit("客户"); b.pii("PERSON", name); b.lit("先生，出生日期"); b.pii("DATE_OF_BIRTH", f"{dob.year}年{dob.month}月{dob.day}日")
        b.lit("，现住"); b.pii("ADDRESS", f.address()); b.lit("，手机号码"); b.pii("CN_MOBILE", mob); b.lit("。")
    elif t == 5:
        b.lit("企业统一社会信用代码"); b.pii("CN_USCC", fake_uscc(rng)); b.lit("，法定代表人"); b.pii("PERSON", name)
        b.lit("，注册地址"); b.pii("ADDRESS", f.address()); b.lit("。")
    else:
        letter = rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
        b.pii("PERSON", name); b.lit("女士持护照"); b.pii("CN_PASSPORT", f"E{letter}{rng.randint(0, 9999999):07d}")
        b.lit("及港澳通行证"); b.pii("CN_HK_MACAU_PERMIT", f"C{rng.randint(10**7, 10**8 - 1)}")
        b.lit("出境，登录IP "); b.pii("IP_ADDRESS", f.ipv4()); b.lit("。")
    b.lit(_zh_decoy(f, rng) + "。")
    return b.build()


def _en_card(f: Any, rng: random.Random) -> str:
    n = f.credit_card_number()
    style = rng.randrange(3)
    if style == 0 or len(n) != 16:
        return n
    sep = " " if style == 1 else "-"
    return sep.join(n[i:i + 4] for i in range(0, 16, 4))


def _en_dob(f: Any, rng: random.Random) -> str:
    d = f.date_of_birth(minimum_age=1, maximum_age=95)
    return d.strftime(rng.choice(["%Y-%m-%d", "%m/%d/%Y", "%B %d, %Y", "%d %b %Y"]))


def _en_record(f: Any, rng: random.Random) -> LabeledRecord:
    b = _Builder()
    t = rng.randrange(6)
    name = f.name()
    addr = f.address().replace("\n", ", ")
    if t == 0:
        b.lit("Patient "); b.pii("PERSON", name); b.lit(" (DOB "); b.pii("DATE_OF_BIRTH", _en_dob(f, rng))
        b.lit(") was seen today. SSN "); b.pii("US_SSN", f.ssn()); b.lit(". Phone: "); b.pii("PHONE_NUMBER", f.phone_number())
        b.lit(". Address: "); b.pii("ADDRESS", addr); b.lit(".")
    elif t == 1:
        b.lit("Customer record: "); b.pii("PERSON", name); b.lit(", email "); b.pii("EMAIL", f.email())
        b.lit(", card "); b.pii("BANK_CARD", _en_card(f, rng)); b.lit(", billing address "); b.pii("ADDRESS", addr)
        b.lit(".")
    elif t == 2:
        b.lit("Call log: "); b.pii("PERSON", name); b.lit(" called from "); b.pii("PHONE_NUMBER", f.phone_number())
        b.lit(" about a refund.")
    elif t == 3:
        b.lit("Employee "); b.pii("PERSON", name); b.lit(", SSN "); b.pii("US_SSN", f.ssn()); b.lit(", IBAN ")
        b.pii("IBAN", f.iban()); b.lit(", last login from "); b.pii("IP_ADDRESS", rng.choice([f.ipv4(), f.ipv6()]))
        b.lit(".")
    elif t == 4:
        b.lit("Please send the invoice to "); b.pii("EMAIL", f.email()); b.lit(" or mail it to "); b.pii("PERSON", name)
        b.lit(", "); b.pii("ADDRESS", addr); b.lit(". Questions: "); b.pii("PHONE_NUMBER", f.phone_number()); b.lit(".")
    else:
        b.lit("Application form. Name: "); b.pii("PERSON", name); b.lit("; Date of birth: ")
        b.pii("DATE_OF_BIRTH", _en_dob(f, rng)); b.lit("; Website: "); b.pii("URL", f.url()); b.lit(".")
    b.lit(" " + _en_decoy(f, rng) + ".")
    return b.build()


def generate_records(n: int, *, locale: str = "zh_CN", seed: int = 0) -> list[LabeledRecord]:
    """``n`` labelled records in ``locale`` ("zh_CN" or "en_US"), each with one decoy that
    looks like PII but fails validation (bad checksum, timestamp, tracking code, visit date)."""
    makers: dict[str, Callable[[Any, random.Random], LabeledRecord]] = {"zh_CN": _zh_record, "en_US": _en_record}
    if locale not in makers:
        raise ValueError(f"locale must be one of {sorted(makers)}")
    f = _faker(locale, seed)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rec = makers[locale](f, rng)
        out.append(rec)
    return out


_DIAGNOSES = ["高血压", "2型糖尿病", "冠心病", "慢性胃炎", "支气管哮喘", "肺炎", "抑郁症", "骨折", "hypertension",
              "asthma", "type 2 diabetes", "migraine"]


def patient_table(n: int, *, seed: int = 0, unique: int | None = None) -> pd.DataFrame:
    """A hospital-style table: name, id_number, phone, address, age, gender, zip, visit_date,
    diagnosis, notes (free text mixing Chinese and English). ``unique`` rows are generated with
    Faker and repeated to ``n`` (fast enough for million-row benchmarks)."""
    import datetime as dt

    import pandas as pd

    f = _faker("zh_CN", seed)
    rng = random.Random(seed)
    m = min(n, unique) if unique else n
    rows = []
    today = dt.date(2026, 1, 1)
    for _ in range(m):
        idn = f.ssn()
        birth = dt.date(int(idn[6:10]), int(idn[10:12]), int(idn[12:14]))
        age = today.year - birth.year
        gender = "男" if int(idn[16]) % 2 else "女"
        name, phone, address = f.name(), f.phone_number(), f.address()
        diagnosis = rng.choice(_DIAGNOSES)
        note = (f"患者{name}，{gender}，{age}岁，主诉头痛三天。电话{phone}。"
                f"Referred by Dr. {rng.choice(['Smith', 'Chen', 'Garcia'])}; follow-up via {f.email()}.")
        rows.append({
            "name": name, "id_number": idn, "phone": phone, "address": address, "age": age, "gender": gender,
            "zip": address[-6:], "visit_date": (today - dt.timedelta(days=rng.randint(0, 700))).isoformat(),
            "diagnosis": diagnosis, "notes": note,
        })
    df = pd.DataFrame(rows)
    if m < n:
        df = pd.concat([df] * (n // m + 1), ignore_index=True).iloc[:n].reset_index(drop=True)
    return df
