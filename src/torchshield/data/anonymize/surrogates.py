"""Realistic stand-ins chosen by a keyed seed: same seed, same surrogate, in the same script and
format as the original (a Chinese name for a Chinese name, a checksum-valid ID or card number).

Hand-rolled rather than Faker: seeding Faker per value costs ~100 us, too slow for a million
rows, and these few formats are simple to build exactly."""

from __future__ import annotations

import datetime as _dt
import re

from torchshield.data.pii.lexicon import load_words
from torchshield.data.pii.validators import cn_id_check_char, luhn_check_digit

__all__ = ["surrogate"]

_ZH_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
             "秀英", "霞", "平", "刚", "桂英", "建华", "文", "华", "玉兰", "红", "志强", "海燕", "子涵", "欣怡",
             "浩然", "宇轩", "思远", "雨桐", "梓萱", "俊杰", "晓东", "佳怡", "嘉怡", "一鸣", "晨曦")
_ZH_STREETS = ("人民路", "解放路", "中山路", "建设路", "和平街", "幸福路", "新华街", "长江路", "文化路", "朝阳路")
_ZH_CITIES = ("北京市海淀区", "上海市浦东新区", "广东省深圳市南山区", "浙江省杭州市西湖区", "四川省成都市武侯区",
              "湖北省武汉市洪山区", "江苏省南京市鼓楼区", "陕西省西安市雁塔区")
_EN_STREETS = ("Oak", "Maple", "Cedar", "Pine", "Elm", "Lake", "Hill", "Park", "Washington", "Lincoln")
_EN_CITIES = ("Springfield, IL 62701", "Riverside, CA 92501", "Franklin, TN 37064", "Salem, OR 97301",
              "Madison, WI 53703", "Georgetown, TX 78626")
_REGIONS = ("110105", "310104", "440305", "330106", "510107", "420102", "610113", "320102")
_CJK = re.compile("[\u4e00-\u9fff]")


class _Picker:
    def __init__(self, seed: bytes) -> None:
        self.n = int.from_bytes(seed, "big")

    def pick(self, items: tuple[str, ...] | list[str]) -> str:
        self.n, i = divmod(self.n, len(items))
        return items[i]

    def digits(self, k: int) -> str:
        self.n, v = divmod(self.n, 10**k)
        return f"{v:0{k}d}"


_SORTED: dict[str, list[str]] = {}


def _words(name: str) -> list[str]:
    if name not in _SORTED:
        _SORTED[name] = sorted(load_words(name))
    return _SORTED[name]


def _single_surnames() -> list[str]:
    if "zh_single" not in _SORTED:
        _SORTED["zh_single"] = [s for s in _words("zh_surnames") if len(s) == 1]
    return _SORTED["zh_single"]


def surrogate(entity: str | None, value: str, seed: bytes, *, keep_birth_year: bool = False) -> str:
    """A fake value of ``entity``'s kind for ``value``, determined by ``seed`` (>= 32 bytes)."""
    p = _Picker(seed)
    zh = bool(_CJK.search(value))
    digits = re.sub(r"[^0-9]", "", value)
    if entity == "PERSON":
        if zh:
            return p.pick(_single_surnames()) + p.pick(_ZH_GIVEN)
        return f"{p.pick(_words('en_first_names'))} {p.pick(_words('en_last_names'))}"
    if entity == "CN_RESIDENT_ID":
        year = int(value[6:10]) if keep_birth_year and len(digits) >= 10 else 1950 + int(p.digits(2)) % 60
        born = _dt.date(year, 1, 1) + _dt.timedelta(days=int(p.digits(3)) % 365)
        body = f"{p.pick(_REGIONS)}{born:%Y%m%d}{p.digits(3)}"
        return body + cn_id_check_char(body)
    if entity == "CN_MOBILE":
        return p.pick(("138", "139", "186", "150", "177", "189")) + p.digits(8)
    if entity == "BANK_CARD" and len(digits) >= 12:
        payload = digits[:6] + p.digits(len(digits) - 7)
        return payload + luhn_check_digit(payload)
    if entity == "EMAIL":
        return f"user{p.digits(6)}@example.com"
    if entity in ("PHONE_NUMBER", "US_SSN"):
        return re.sub(r"[0-9]", lambda _: p.digits(1), value)
    if entity == "ADDRESS":
        if zh:
            return f"{p.pick(_ZH_CITIES)}{p.pick(_ZH_STREETS)}{int(p.digits(3)) + 1}号"
        return f"{int(p.digits(4)) + 1} {p.pick(_EN_STREETS)} Street, {p.pick(_EN_CITIES)}"
    # Unknown kinds: same shape, digits and letters replaced.
    return re.sub(r"[0-9]", lambda _: p.digits(1),
                  re.sub(r"[A-Za-z]", lambda m: chr(65 + int(p.digits(2)) % 26), value))
