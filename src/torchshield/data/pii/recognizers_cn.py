"""Chinese recognisers: resident ID (18 and 15 digits), mobile, landline, USCC, passport,
HK/Macau permits, licence plates, and the dictionary + rule recognisers for names and addresses.

Validation rules follow reference/cn-pii-rules.md (GB 11643, GB 32100, MIIT prefixes, GA 36).
Names and addresses have no checksum: names come from a surname list plus context cues and a
set of characters that do not occur in given names; addresses from a province anchor (or an
address cue) followed by administrative and street suffixes. Both are heuristics; their
measured precision/recall is in docs/benchmarks.md."""

from __future__ import annotations

import re
from collections.abc import Iterable

from torchshield.data.pii import zh_names
from torchshield.data.pii.lexicon import load_words
from torchshield.data.pii.recognizer import (
    NEG_NUMBER,
    NUM_AFTER,
    PatternRecognizer,
    RawMatch,
    Recognizer,
    ScanText,
)
from torchshield.data.pii.validators import (
    CN_PROVINCE_CODES,
    cn_id15_valid,
    cn_id_birth_date,
    cn_id_valid,
    cn_mobile_prefix_valid,
    uscc_structure_valid,
)

__all__ = ["ChineseAddressRecognizer", "ChineseNameRecognizer", "cn_recognizers"]

CTX_ID = ("身份证", "身份号", "证件号", "公民身份", "居民身份", "id card", "id no", "identity")
CTX_PHONE = ("手机", "电话", "联系方式", "联系", "微信", "致电", "tel", "phone", "mobile", "call")
CTX_LANDLINE = ("电话", "座机", "固话", "办公", "传真", "联系", "tel", "phone", "fax")
CTX_USCC = ("信用代码", "社会信用", "税号", "纳税人识别号", "营业执照", "uscc")
CTX_PASSPORT = ("护照", "passport")
CTX_PERMIT = ("通行证", "回乡证", "港澳", "permit")
CTX_PLATE = ("车牌", "号牌", "车辆", "车号", "plate", "驾驶")

_DATE = r"(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
_ID18 = r"[1-9][0-9]{5}[ -]?" + _DATE + r"[ -]?[0-9]{3}[0-9Xx]" + NUM_AFTER
_ID15 = r"[1-9][0-9]{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}" + NUM_AFTER
_MOBILE = r"(?=[+018])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}" + NUM_AFTER
_LANDLINE = (r"(?:\(0[0-9]{2,3}\)[ -]?|0(?:10|2[0-9]|[3-9][0-9]{2})[ -]?)"
             r"[2-9][0-9]{6,7}(?:(?:-|转)[0-9]{1,6})?(?![0-9])")
_USCC_CH = "0-9A-HJ-NP-RTUW-Y"
_UC = f"[{_USCC_CH}]"
# Written solid, as authority+category / region / organisation code / check (2-6-9-1), or in
# groups of four (4-4-4-4-2), with one space or hyphen between the parts.
_USCC = (f"(?=[1-9ANY])(?:[1-9ANY]{_UC}[0-9]{{6}}{_UC}{{10}}"
         f"|[1-9ANY]{_UC}[ -][0-9]{{6}}[ -]{_UC}{{9}}[ -]?{_UC}"
         f"|[1-9ANY]{_UC}[0-9]{{2}}[ -][0-9]{{4}}[ -]{_UC}{{4}}[ -]{_UC}{{4}}[ -]{_UC}{{2}})" + NUM_AFTER)
# The fast forms (``fast=``) match exactly what the readable ones match, opening with one
# character class: the first character is consumed, then lookbehinds say which branch it began.
_USCC_FAST = (f"[1-9ANY]{_UC}(?:[0-9]{{6}}{_UC}{{10}}|[ -][0-9]{{6}}[ -]{_UC}{{9}}[ -]?{_UC}"
              f"|[0-9]{{2}}[ -][0-9]{{4}}[ -]{_UC}{{4}}[ -]{_UC}{{4}}[ -]{_UC}{{2}})" + NUM_AFTER)
# Every USCC holds this (the pattern without its boundary checks): most 16-19 digit order and
# tracking numbers fail it at once.
_USCC_GATE = f"[1-9ANY]{_UC}(?:[0-9]{{6}}{_UC}{{10}}|[ -][0-9]{{6}}[ -]|[0-9]{{2}}[ -][0-9]{{4}}[ -])"
_MOBILE_FAST = (r"[+018](?:(?<=\+)86[ -]?1|(?<=0)086[ -]?1|(?<=8)6[ -]?1|(?<=1))[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}"
                + NUM_AFTER)
_PASSPORT = r"(?:E[A-HJ-NP-Z][0-9]{7}|[EGK][0-9]{8}|(?:PE|SE|DE|MA)[0-9]{7})" + NUM_AFTER
_PASSPORT_FAST = (r"[EGKPSDM](?:(?<=E)[A-HJ-NP-Z][0-9]{7}|(?<=[EGK])[0-9]{8}|(?<=[PSD])E[0-9]{7}|(?<=M)A[0-9]{7})"
                  + NUM_AFTER)
_PERMIT = r"(?:C[A-HJ-NP-Z][0-9]{7}|C[0-9]{8}|[HM][0-9]{8}(?:[0-9]{2})?)" + NUM_AFTER
_PERMIT_FAST = r"[CHM](?:(?<=C)[A-HJ-NP-Z][0-9]{7}|(?<=C)[0-9]{8}|(?<=[HM])[0-9]{8}(?:[0-9]{2})?)" + NUM_AFTER
_PROV_ABBR = "京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵云藏陕甘青宁新"
_PLATE = (f"[{_PROV_ABBR}][A-HJ-Z][ ·.-]?"
          r"(?:[DF][A-HJ-NP-Z0-9][0-9]{4}|[0-9]{5}[DF]|[A-HJ-NP-Z0-9]{4}[A-HJ-NP-Z0-9挂学警港澳])"
          r"(?![0-9A-Za-z])")


def _id18(s: str) -> bool:
    return cn_id_valid(s)


def _mobile(s: str) -> bool:
    digits = s.lstrip("+")
    return len(digits) >= 11 and cn_mobile_prefix_valid(digits[-11:])


def _landline(raw: str) -> float | None:
    grouped = any(c in raw for c in "-() ")
    body = re.split(r"转|-(?=[0-9]{1,6}$)", raw.replace("(", "").replace(")", "").replace(" ", "").replace("-", "", 1))[0]
    if body.startswith(("010", "02")) and len(body) < 11:
        return None  # 2-digit area codes take 8-digit local numbers
    # An ungrouped 11-12 digit run starting with 0 is as often a card or account number.
    return 0.6 if grouped else 0.35


def _uscc(s: str) -> float | None:
    # mod 31 alone passes one 18-digit order number in 31; the region code and the inner
    # GB 11714 check digit leave about one in 300 of those.
    if not uscc_structure_valid(s):
        return None
    if s.isdigit() and cn_id_birth_date(s) is not None and int(s[:2]) in CN_PROVINCE_CODES:
        return 0.45  # all digits and shaped like a resident ID: an organisation code only with context
    return 0.95


def cn_recognizers() -> list[Recognizer]:
    """Fresh instances of every Chinese recogniser, in priority order."""
    return [
        PatternRecognizer("cn_resident_id_18", "CN_RESIDENT_ID", _ID18, validator=_id18, score=0.95,
                          context=CTX_ID, context_boost=0.05, flags=re.ASCII,
                          left_boundary=True, min_digit_run=6, negative_context=NEG_NUMBER,
                          gate=r"[0-9][0-9]{5}[ -]?(?:18|19|20)[0-9]{2}"),
        PatternRecognizer("cn_resident_id_15", "CN_RESIDENT_ID", _ID15, validator=cn_id15_valid,
                          score=0.5, context=CTX_ID, context_boost=0.35, require_context=True,
                          flags=re.ASCII, left_boundary=True, min_digit_run=15),
        PatternRecognizer("cn_uscc", "CN_USCC", _USCC, validator=_uscc, score=0.95, context=CTX_USCC,
                          context_boost=0.1, invalid_score=0.3, flags=re.ASCII,
                          left_boundary=True, min_digit_run=4, negative_context=NEG_NUMBER,
                          gate=_USCC_GATE, fast=_USCC_FAST),
        PatternRecognizer("cn_mobile", "CN_MOBILE", _MOBILE, validator=_mobile, score=0.85,
                          context=CTX_PHONE, context_boost=0.15, flags=re.ASCII, left_boundary=True, min_digit_run=4,
                          gate=r"1[3-9][0-9][ -]?[0-9]{4}", fast=_MOBILE_FAST,
                          clean=lambda s: s.replace(" ", "").replace("-", "")),
        PatternRecognizer("cn_landline", "CN_LANDLINE", _LANDLINE, validator=_landline, score=0.6,
                          context=CTX_LANDLINE, context_boost=0.3, flags=re.ASCII, min_digit_run=7, left_boundary=True,
                          clean=lambda s: s, gate=r"0[0-9]{2,3}\)?[ -]?[2-9][0-9]{6}"),
        PatternRecognizer("cn_passport", "CN_PASSPORT", _PASSPORT, score=0.5, context=CTX_PASSPORT,
                          context_boost=0.4, flags=re.ASCII, left_boundary=True, min_digit_run=7,
                          fast=_PASSPORT_FAST, gate=r"[A-Z][0-9]{7}"),
        PatternRecognizer("cn_hk_macau_permit", "CN_HK_MACAU_PERMIT", _PERMIT, score=0.35,
                          context=CTX_PERMIT, context_boost=0.5, require_context=True, flags=re.ASCII,
                          left_boundary=True, min_digit_run=7, fast=_PERMIT_FAST),
        PatternRecognizer("cn_license_plate", "CN_LICENSE_PLATE", _PLATE, score=0.7, context=CTX_PLATE,
                          context_boost=0.25, gate=f"[{_PROV_ABBR}]"),
        ChineseNameRecognizer(),
        ChineseAddressRecognizer(),
    ]


_CJK = "\u4e00-\u9fff"

# Characters that essentially never appear in a given name: function words, units, body and
# medical words, and the first characters of the words that usually follow a name in records.
_NOT_GIVEN = frozenset(
    "的了在是和与及或于为被把将从到向对给让由等今年月日岁男女性说称因住来去已曾现其该此每各有无不也都"
    "就还又再并而但且则即若如要会能可应需请使用经据按通过后前时中上下内外里手身电联系号码证卡址户籍院"
    "科室诊断病史患者血压糖尿炎症癌瘤痛肿伤药片服次个位名省市区县路街道镇村乡万千百十两三四五六七"
    "八九零份周期间级型类医疗检查治部门公司集团限责任股银行账办理申请核实于名下存异常交易使用尾还款先"
    "士同老师教授主任护经律医生的地籍贯出生联络邮箱网址微信电话手机身份证件以之所这那哪啥吗呢吧啊呀"
    "您你我他她它们咱们自己已经正在通知告诉提供填写登记入离职工作业务客户用户账单订购买寄送收件发货"
)
# With the statistical model, these leave the hard list: they are common in given names (若曦,
# 福生, 建业, 如意, 羲之) and the character model and word checks judge them in context.
_NAME_FRIENDLY = frozenset("和今月来若如可中万千三信之正业生士银发常任向")
_NOT_GIVEN_STAT = _NOT_GIVEN - _NAME_FRIENDLY
_CUE_BEFORE = ("患者", "姓名", "名字", "申请人", "联系人", "客户", "病人", "家属", "签名", "医生", "医师",
               "护士", "主任", "经办人", "收件人", "寄件人", "用户", "我叫", "我是", "员工", "学生", "被保险人",
               "投保人", "借款人", "持卡人", "户主", "法人", "代表人", "负责人", "本人", "委托人", "监护人",
               "审核人", "陪同人", "见证人", "签字", "告知", "通知", "户名", "账户名", "车主", "开户人", "收款人",
               "付款人", "汇款人", "转账给", "汇款给", "dr.", "dr",
               "name", "叫", "由", "请")
_STRONG_CUES = frozenset(c for c in _CUE_BEFORE if len(c) >= 2)
_STRONG_TUPLE = tuple(_STRONG_CUES)
_TITLE_AFTER = ("先生", "女士", "小姐", "医生", "老师", "同志", "教授", "主任", "大夫", "护士", "经理",
                "律师", "同学", "师傅", "阿姨", "叔叔", "的身份证", "的手机", "的电话", "的银行卡", "的账户")
# What follows a name in a record: its sex, its ID, its phone (王芳，女，45岁 / 张伟（身份证：…）).
_AFTER_CUES = ("，男", "，女", ",男", ",女", "（男", "（女", "(男", "(女", "（身份证", "(身份证", "，身份证",
               "，手机", "，电话", "，年龄", "，性别", "，住址")
_BOUNDARY = frozenset("，。；：、！？,.;:!?()（）[]【】\"'“”‘’《》 \t\n/|-—")
_NOT_NAMES = frozenset({"高血压", "高血脂", "高血糖", "高烧", "高热", "黄疸", "白血病", "江苏", "方便", "金额",
                        "常规", "安全", "全部", "明显", "明天", "时间", "文件", "通知", "高度", "于是", "向前",
                        "张开", "周围", "周末", "林业", "成功", "成为", "杨树", "程序", "任务", "任何", "万元",
                        "单位", "马上", "江西", "湖南", "湖北", "山东", "山西", "广东", "广西", "云南", "贵州",
                        "福建", "安徽", "河南", "河北", "海南", "宁夏", "新疆", "西藏", "青海", "甘肃", "陕西",
                        "四川", "吉林", "黑龙江", "辽宁", "浙江", "上海", "北京", "天津", "重庆", "台湾", "香港"})


class ChineseNameRecognizer(Recognizer):
    """Surname (single or compound, from a shipped list) + one or two given-name characters,
    scored by cue words and by a statistical model (``zh_names``: jieba's HMM name-character
    probabilities and its word dictionary).

    Every surname position is a candidate. What makes it a name: a cue (患者/姓名/户名 before,
    先生/女士 after), list separators, the candidate standing as its own word (it neither is nor
    cuts through a dictionary word: 高度, 江苏, 上海|市), and given-name characters that the HMM
    sees in names far more often than in text (芳, 伟 vs 案, 度). Without jieba (the ``pii``
    extra) only cue positions are examined, as before. Measured precision/recall, on Faker names
    and on held-out names, are in docs/data.md."""

    name = "cn_person"
    entity_types = frozenset({"PERSON"})
    languages = frozenset({"zh"})

    def __init__(self) -> None:
        words = load_words("zh_surnames")
        self._compound = frozenset(w for w in words if len(w) == 2)
        self._single = frozenset(w for w in words if len(w) == 1)
        firsts = "".join(sorted(self._single | {w[0] for w in self._compound}))
        self._surname_start = re.compile(f"[{re.escape(firsts)}]")
        cues = "|".join(sorted(map(re.escape, _CUE_BEFORE + _LIST_CUES), key=len, reverse=True))
        self._cue = re.compile(f"(?:{cues})[ ：:]*")
        self._title = re.compile("|".join(sorted(map(re.escape, _TITLE_AFTER), key=len, reverse=True)))
        strong = "|".join(sorted(map(re.escape, _STRONG_CUES), key=len, reverse=True))
        self._strong_cue = re.compile(f"(?:{strong})[ ：:]*")

    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        stats = zh_names.load()
        scored = self._scored_stat(doc, stats) if stats is not None else self._scored_cues(doc)
        # Overlapping candidates (由刘洋 / 刘洋 before 护士): the best-scored one wins.
        taken: list[tuple[int, int]] = []
        for score, _, start, end in sorted(scored, key=lambda c: (-c[0], -c[1], c[2])):
            if all(end <= a or start >= b for a, b in taken):
                taken.append((start, end))
                # just under the threshold: jieba's tagger decides (see zh_names.nr_spans)
                yield RawMatch("PERSON", start, end, score,
                               _verify_zh if score < doc.min_score else None)

    def _scored_stat(self, doc: ScanText, stats: zh_names.ZhNameStats) -> list[tuple[float, int, int, int]]:
        text = doc.text
        n = len(text)
        out = []
        compound, single, bad = self._compound, self._single, _NOT_GIVEN_STAT
        # Candidates up to _BAND under the threshold are kept for the tagger's second opinion.
        floor = doc.min_score - _BAND if doc.min_score >= _BAND + 0.25 else doc.min_score
        for m in self._surname_start.finditer(text):
            s = m.start()
            for g in (s + 2, s + 1):
                if g >= n or text[s:g] not in (compound if g == s + 2 else single):
                    continue
                c1 = text[g]
                if not ("\u4e00" <= c1 <= "\u9fff") or c1 in bad:
                    continue  # no given name here
                c2 = text[g + 1] if g + 1 < n else ""
                two = "\u4e00" <= c2 <= "\u9fff" and c2 not in bad
                for e in ((g + 2, g + 1) if two else (g + 1,)):
                    cue = self._score(text, s, e)
                    score = cue + _stat_base(text, s, g, e, stats)
                    if score + _EDGE_MAX < floor:
                        continue  # cannot reach the band: skip the word checks at the edges
                    score += _stat_edges(text, s, e, stats, cued=cue >= 0.5)
                    if score >= floor:
                        out.append((min(score, 0.95), e - s, s, e))
        if _UNLISTED_MIN >= floor:
            out.extend(self._unlisted(text, stats))
        return out

    def _unlisted(self, text: str, stats: zh_names.ZhNameStats) -> list[tuple[float, int, int, int]]:
        """Names whose surname is not on the list (訾, 郏, 禚 ...), only right after a strong cue
        (姓名, 见证人：) and standing alone up to the next punctuation: two or three characters that
        are no dictionary word and whose given-name part the character model finds name-like."""
        out = []
        n = len(text)
        for m in self._strong_cue.finditer(text):
            p = m.end()
            if p >= n or text[p] in self._single or text[p:p + 2] in self._compound:
                continue  # a listed surname: the main pass judges it
            for length in (3, 2):
                e = p + length
                if e > n or not all("\u4e00" <= c <= "\u9fff" and c not in _NOT_GIVEN for c in text[p:e]):
                    continue
                if e < n and text[e] not in _BOUNDARY:
                    continue
                cand = text[p:e]
                if stats.words.get(cand, 0) >= _MIN_WORD or any(stats.words.get(text[p:p + k], 0) >= _MIN_WORD
                                                                for k in (2,) if k < length):
                    continue  # an ordinary word (未填写, 无), not a name
                if stats.given_lr(cand[1:]) >= _UNLISTED_LR:
                    out.append((_UNLISTED_MIN, length, p, e))
                    break
        return out
    def _scored_cues(self, doc: ScanText) -> list[tuple[float, int, int, int]]:
        text = doc.text
        starts: set[int] = set()
        if doc.min_score <= 0.4:
            starts.update(i for i, ch in enumerate(text) if ch in self._single or text[i:i + 2] in self._compound)
        else:
            starts.update(m.end() for m in self._cue.finditer(doc.lower))
            for m in self._title.finditer(text):
                p = m.start()
                starts.update(s for s in (p - 4, p - 3, p - 2) if s >= 0 and self._candidate_end(text, s) == p)
        scored = []
        for start in starts:
            end = self._candidate_end(text, start)
            if end > 0:
                score = self._score(text, start, end)
                if score >= doc.min_score:
                    scored.append((score, end - start, start, end))
        return scored

    def _candidate_end(self, text: str, start: int) -> int:
        """End of the name starting at ``start``, or -1 if no surname + given name is there."""
        if text[start:start + 2] in self._compound:
            g = start + 2
        elif text[start:start + 1] in self._single:
            g = start + 1
        else:
            return -1
        end = g
        n = len(text)
        while end < n and end < g + 2 and _is_cjk(text[end]) and text[end] not in _NOT_GIVEN:
            end += 1
        if end == g:
            return -1
        if end == g + 2 and end < n and _is_cjk(text[end]) and text[end] not in _NOT_GIVEN \
                and not any(text.startswith(t, end) for t in _TITLE_AFTER):
            # A third character followed by more running text more likely starts the next word
            # (张伟表示, 罗敏否认): keep the shorter name.
            end -= 1
        cand = text[start:end]
        if any(cand.startswith(w) or w.startswith(cand) for w in _NOT_NAMES_BY_FIRST.get(text[start], ())):
            return -1
        return end

    @staticmethod
    def _score(text: str, start: int, end: int) -> float:
        before = text[max(0, start - 8):start].lower().rstrip(" ：:")
        after = text[end:end + 4]
        score = 0.2
        if before.endswith(_STRONG_TUPLE) or before[-1:] in ("为", "是") and before[:-1].endswith(_STRONG_TUPLE):
            score += 0.4  # 投保人陈磊 / 投保人为陈磊
        elif start > 0 and (before.endswith(_ALL_CUES) or text[start - 1] in "：:"):
            score += 0.15
        if after.startswith(_TITLE_AFTER):
            score += 0.3
        elif after.startswith(_AFTER_CUES):
            score += 0.2
        if start == 0 or text[start - 1] in _BOUNDARY or not _is_cjk(text[start - 1]):
            score += 0.1
        if end == len(text) or text[end] in _BOUNDARY or not _is_cjk(text[end]) or text[end] in "的在说是今于":
            score += 0.1
        return min(score, 0.95)


_MIN_WORD = 5  # dictionary words rarer than this do not count against a candidate
_PLACE_AFTER = frozenset("省市区县州镇乡村路街道巷弄号")
_COMMON_NAME_WORD = 600  # an "nr" word this frequent is a mis-tagged word (康复 1018, 秦岭 687)
# Characters that commonly stand right before or after a name as words of their own.
_FUNCTION_BEFORE = frozenset("和与及同跟给向对被让叫请为由致将把替帮找问据于在是说")
_FUNCTION_AFTER = frozenset("和与及同跟的在说是今于来去到已也都就还又再曾为被把将向对给从系签表")


_EDGE_MAX = 0.2  # the most _stat_edges adds (a word on each side)
_UNLISTED_MIN = 0.6  # score of a name with an unlisted surname right after a strong cue
_UNLISTED_LR = 2.0  # how name-like its given-name characters must be (stats.given_lr)
_BAND = 0.2  # how far under the threshold a candidate may score and still be verified
_TAGGER_RARE = 50  # a dictionary name this frequent is a word the dictionary mis-tags
_TAGGED = 0.6  # the score of a candidate jieba's tagger labels a person name


def _verify_zh(text: str, start: int, end: int, score: float) -> float:
    """jieba's verdict on a candidate just under the threshold: a name span over most of it
    confirms it; anything else leaves the rule score (under the threshold)."""
    spans = zh_names.nr_spans(text, start, end)
    stats = zh_names.load()
    if spans is None or stats is None:
        return score
    for a, b in spans:
        # A name the tagger's HMM found, or a rare dictionary name (王建国 12); not a frequent
        # dictionary entry it tags nr by mistake (孔径 126, 毛发 258, 胡萝卜 452, 齐鲁 95).
        if min(b, end) - max(a, start) >= 0.5 * (end - start) and stats.words.get(text[a:b], 0) < _TAGGER_RARE:
            return max(score, _TAGGED)
    return score


def _stat_base(text: str, s: int, g: int, e: int, stats: zh_names.ZhNameStats) -> float:
    """The cheap part of the statistics: name-likeness of the given characters, and whether the
    candidate or its given name is an ordinary word, starts a longer one, or names a place."""
    cand, given = text[s:e], text[g:e]
    words = stats.words
    n = len(text)
    adj = 0.05 + max(-0.3, min(0.25, 0.06 * stats.given_lr(given)))
    freq = words.get(cand, 0)
    if freq >= _MIN_WORD and (cand not in stats.name_words or freq >= _COMMON_NAME_WORD):
        adj -= 0.5  # 高度, 方案, 江苏 (and 康复, 秦岭, which jieba tags as names): a word
    if len(given) == 2 and words.get(given, 0) >= zh_names.COMMON_WORD and given not in stats.given_pairs \
            and cand not in stats.name_words:  # (王建国 is a name jieba knows, though 建国 is a word)
        adj -= 0.3  # 米|右转, 胡|萝卜: the "given name" is an ordinary word
    for k in range(e - s + 1, 5):
        if s + k <= n and words.get(text[s:s + k], 0) >= _MIN_WORD:
            adj -= 0.35  # 齐齐|哈尔, 江河湖|海: the start of a longer word
            break
    if e < n and text[e] in _PLACE_AFTER:
        adj -= 0.4  # 宁德县, 张家港路: a place name
    if s > 0 and text[s - 1] in "省市区县":
        adj -= 0.2  # inside an address: 辽宁省兰英县
    return adj


def _stat_edges(text: str, s: int, e: int, stats: zh_names.ZhNameStats, *, cued: bool) -> float:
    """Whether the text segments around the candidate as around a name standing on its own: a
    word (or a function character) ends right before it and one starts right after it. A
    dictionary word through an edge that is more frequent than those says otherwise: the surname
    belongs to the word before (上海|市) or the given name to the word after (张主|任); 今天|王娟
    is not 天王. ``cued``: a strong cue or title is present, so such words count half."""
    words = stats.words
    n = len(text)
    adj = 0.0
    left = 0
    if s > 0 and _is_cjk(text[s - 1]):
        left = _FUNCTION_FREQ if text[s - 1] in _FUNCTION_BEFORE else _support(
            words, [text[s - k:s] for k in (2, 3, 4) if k <= s])
    right = 0
    if e < n and _is_cjk(text[e]):
        right = _FUNCTION_FREQ if text[e] in _FUNCTION_AFTER else _support(
            words, [text[e:e + k] for k in (2, 3, 4) if e + k <= n])
    length = e - s
    cross_left = _support(words, [text[s - k:s + j] for k in (1, 2, 3) if k <= s
                                  for j in range(1, min(length, 4 - k) + 1)])
    cross_right = _support(words, [text[e - j:e + k] for k in (1, 2, 3) if e + k <= n
                                   for j in range(1, min(length, 4 - k) + 1)])
    weight = 0.5 if cued else 1.0
    if cross_left > left:
        adj -= 0.35 * weight
    elif left:
        adj += 0.1
    if cross_right > right:
        adj -= 0.35 * weight
    elif right:
        adj += 0.1
    return adj


_FUNCTION_FREQ = 2000  # a function character next to a name counts as a word this frequent


def _support(words: dict[str, int], spans: list[str]) -> int:
    """The highest dictionary frequency among ``spans`` (0 when none is a word of weight)."""
    best = 0
    for w in spans:
        f = words.get(w, 0)
        if f >= _MIN_WORD and f > best:
            best = f
    return best


_LIST_CUES = ("、", "和", "与", "及", "同", "致", "：", ":")
_ALL_CUES = _CUE_BEFORE + _LIST_CUES
_NOT_NAMES_BY_FIRST: dict[str, tuple[str, ...]] = {}
for _w in _NOT_NAMES:
    _NOT_NAMES_BY_FIRST[_w[0]] = (*_NOT_NAMES_BY_FIRST.get(_w[0], ()), _w)
_COMPOUND = frozenset(w for w in load_words("zh_surnames") if len(w) == 2)


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


_PROVINCES = ("北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "黑龙江", "江苏", "浙江", "安徽",
              "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "海南", "四川", "贵州", "云南", "陕西",
              "甘肃", "青海", "台湾", "内蒙古", "广西", "西藏", "宁夏", "新疆", "香港", "澳门")
_PROV_SUFFIX = "(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)?"
_ADDR_CUES = "(?:住址|地址|住在|家住|现住|居住在|居住于|住于|位于|户籍地|户籍|寄往|寄到|送至|送到|搬到|来自)"
_ADMIN = "省市区县州盟旗镇乡"
_STREET = "路街道巷弄村里"
_NUMBERED = "号楼栋幢座室层元"
_ADDR_BODY = f"[{_CJK}A-Za-z0-9#-]"


class ChineseAddressRecognizer(Recognizer):
    """Province (or an address cue such as 住址) + administrative / street / number parts.

    The span grows over address characters and is cut back to its last address suffix
    (市, 区, 路, 号, 座, 室, ...); a trailing 6-digit postcode is included. Score grows with the
    number of levels present: province + district + street/number is an address; a bare
    province name is not."""

    name = "cn_address"
    entity_types = frozenset({"ADDRESS"})
    languages = frozenset({"zh"})

    def __init__(self) -> None:
        # One flat alternation whose branches all open with a literal (what the nested form
        # ``(?:provinces)suffix|(?:cues)[：: ]?`` matches, in the same order), so the engine skips
        # ahead to the next possible first character.
        provs = [f"{p}{_PROV_SUFFIX}" for p in sorted(_PROVINCES, key=len, reverse=True)]
        cues = [f"{c}[：: ]?(?=[{_CJK}])" for c in _ADDR_CUES[3:-1].split("|")]
        self._anchor_fast = re.compile("|".join(provs + cues))
        prov = "|".join(sorted(_PROVINCES, key=len, reverse=True))
        self._anchor = re.compile(f"(?:{prov}){_PROV_SUFFIX}|{_ADDR_CUES}[：: ]?(?=[{_CJK}])")
        self._body = re.compile(f"{_ADDR_BODY}{{0,40}}")
        self._post = re.compile(r" ?[0-9]{6}(?![0-9])")

    def analyze(self, doc: ScanText) -> Iterable[RawMatch]:
        text = doc.text
        pos = 0
        anchor = self._anchor if doc.reference else self._anchor_fast
        while True:
            m = anchor.search(text, pos)
            if m is None:
                return
            cue = m.group(0)[:2] not in _PROVINCES_2
            start = m.end() if cue else m.start()
            body = self._body.match(text, m.end())
            assert body is not None
            seg = text[start:body.end()]
            cut = max((i for i, ch in enumerate(seg) if ch in _ADMIN or ch in _STREET or ch in _NUMBERED),
                      default=-1)
            if cut < 0:
                pos = m.end()
                continue
            end = start + cut + 1
            seg = text[start:end]
            levels = sum(1 for ch in set(seg) if ch in _ADMIN) + (1 if any(c in _STREET for c in seg) else 0) \
                + (1 if any(c in _NUMBERED for c in seg) or any(c.isdigit() for c in seg) else 0)
            post = self._post.match(text, end)
            if post is not None:
                end = post.end()
            score = 0.3 + 0.2 * min(levels, 3) + (0.1 if cue else 0.0)
            if levels >= 2 or (cue and levels >= 1):
                yield RawMatch("ADDRESS", start, end, min(score, 0.95))
                pos = end
            else:
                pos = m.end()


_PROVINCES_2 = frozenset(p[:2] for p in _PROVINCES)
