"""Labelled corpora for measuring PERSON detection, Chinese and English (issue 20).

Two sources per language, so a recogniser is not only measured on the names it was built from:

* ``source="faker"``: names from Faker (``zh_CN`` / ``en_US``) in a wide set of sentence frames:
  with a cue (患者, Patient), with a title (先生, Mr.), and in plain contexts a reader finds obvious
  but no cue word marks (``户名张桂英。``, ``样本属于李龙，``, ``User Adam Anderson logged in``).
* ``source="held_out"``: hand-written clinical and banking sentences (frames not used above) with
  names that are *not* drawn from the recogniser's lists: Chinese given names written here and
  checked to be outside Faker's ``zh_CN`` list, some surnames outside our surname list; English
  names from other Faker locales (``en_IN``, ``fr_FR``, ``it_IT``, ``es_ES``, ``de_DE``, ``nl_NL``).

Every corpus also holds name-free sentences dense in surname characters and capitalised words
(``高度怀疑肺炎``, ``江苏省人民医院``, ``New York General Hospital``), so precision is measured on
hard negatives, not only on sentences that hold a name. Records carry gold ``PERSON`` spans only.
Nothing here is real personal data (historical names in the held-out list are public figures)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from torchshield.data.synth import LabeledRecord

__all__ = ["generate_name_records"]

_N = "\x00"  # placeholder for the name in a frame

# ---- Chinese ------------------------------------------------------------------------------
_ZH_FRAMES_DEV = [
    "患者{N}，男，45岁，因胸痛入院。", "户名{N}。", "车主{N}，车牌号京A12345。", "样本属于{N}，请核对。",
    "{N}（身份证：110105194912310021）申请贷款。", "{N}先生您好，您的快递已到。", "{N}女士的预约已确认。",
    "今天{N}来医院复查。", "据{N}介绍，事故发生在凌晨。", "本次检查由{N}负责。", "收款人：{N}",
    "转账给{N}五千元。", "我和{N}是同事。", "{N}的手机号是13812345678。", "开户人{N}，开户行工商银行。",
    "投保人为{N}，被保险人为其子女。", "经办人：{N}，日期2024年3月1日。", "{N}，男，32岁，体检。",
    "联系人{N}电话13900001111", "请{N}到三号窗口办理。", "{N}同志被评为先进个人。", "主治医生{N}查房。",
    "{N}于昨日出院。", "借款人{N}逾期三个月。", "签名：{N}", "致{N}：您的申请已受理。", "寄件人{N}，已签收。",
    "审核：{N}", "{N}说明天再来。", "家属{N}表示同意手术。", "客户{N}反映账单有误。", "由{N}护士完成换药。",
]
_ZH_FRAMES_HELD = [
    "门诊记录：{N}，主诉咳嗽一周。", "住院号2024-0315，姓名{N}，床号12。", "术前谈话由{N}签字确认。",
    "{N}今晨体温38.5度，予退热处理。", "会诊申请：请{N}主任协助诊治。", "放射科报告已发送给{N}。",
    "储户{N}于柜台办理挂失。", "本账户持有人{N}，余额充足。", "{N}申请将额度提高至五万元。",
    "信用卡中心致电{N}核实交易。", "理财经理{N}推荐了稳健型产品。", "代理人{N}携委托书前来办理。",
    "兹证明{N}系我院职工。", "{N}与{M}为夫妻关系。", "介绍人：{N}；见证人：{M}。", "感谢{N}的耐心讲解！",
]
_ZH_NAME_FREE = [
    "方案已确认，明日手术。", "金额为500元，已缴费。", "江苏省人民医院会诊意见。", "高度怀疑肺炎，建议复查。",
    "于是决定手术治疗。", "何时复查请电话预约。", "常规检查未见异常。", "安排明天上午手术。", "周一门诊随访。",
    "张主任会诊后建议手术。", "白细胞计数升高。", "黄疸指数正常。", "林医生查房。", "万一出现发热及时就诊。",
    "程序已完成。", "任何不适随诊。", "石膏固定四周。", "毛发稀疏。", "段落结束。", "钟表走时正常。",
    "上海市黄浦区南京东路100号。", "杭州西湖风景区游客众多。", "向前走两百米右转。", "成都天府新区管委会。",
    "高速公路收费站。", "江河湖海水质监测。", "平安银行信用卡中心。", "明天下午三点开会。", "常见不良反应为头晕。",
    "孔径大小合适。", "包装完好无破损。", "白天多饮水。", "文件已归档。", "全部资料已提交。", "马上安排检查。",
    "余额不足请充值。", "时间不早了。", "秦岭以南气候湿润。", "齐鲁医院复诊。", "安全出口在左侧。",
    "订单号2024031512345已发货。", "华为手机售后服务。", "金融机构反洗钱规定。", "和平路派出所。",
    "康复训练每日两次。", "甘草片每日三次。", "温度适宜，湿度正常。", "胡萝卜富含维生素。", "白内障术后复查。",
]
# Hand-written given names, checked against Faker's zh_CN list (generate_name_records asserts it).
_ZH_GIVEN_HELD = (
    "梓涵 雨桐 浩然 子轩 诗琪 俊熙 婉清 晓东 思远 一鸣 嘉怡 欣怡 宇轩 梦瑶 语嫣 若曦 天佑 家豪 淑芬 美玲 振华 国栋 "
    "德胜 铁柱 翠花 秋菊 冬生 立新 卫东 向阳 援朝 静怡 雅琴 佩玲 子墨 沐阳 锦程 奕辰 梓萱 一诺 "
    "安琪 乐瑶 书瑶 若汐 星辰 明哲 睿泽 承志 思彤 紫涵 文博 泽宇 立群 素珍 宝珠 永康 福生 长庚 招娣 来福 "
    "晓萌 蕊 琛 昊 珂 璇 骁 岚 铭 楷 萱 湘 钧 蔚 珏 霖 曦 彦"
).split()
_ZH_SURNAMES_HELD = (
    "王 李 张 刘 陈 杨 赵 黄 周 吴 徐 孙 胡 朱 高 林 何 郭 马 罗 梁 宋 郑 谢 韩 唐 冯 于 董 萧 程 曹 袁 邓 许 傅 沈 "
    "曾 彭 吕 苏 卢 蒋 蔡 贾 丁 魏 薛 叶 阎 余 潘 杜 戴 夏 钟 汪 田 任 姜 范 方 石 姚 谭 廖 邹 熊 金 陆 郝 孔 白 崔 "
    "康 毛 邱 秦 江 史 顾 侯 邵 孟 龙 万 段 雷 钱 汤 尹 黎 易 常 武 乔 贺 赖 龚 文 欧阳 司马 上官 诸葛 慕容 令狐 "
    "皇甫 尉迟 端木 公孙 夏侯 亓 佘 禚 逯 郏 晁 訾"
).split()


def _zh_dev_name(f: Any, rng: random.Random) -> str:
    return str(f.name())


def _zh_held_name(f: Any, rng: random.Random) -> str:
    return rng.choice(_ZH_SURNAMES_HELD) + rng.choice(_ZH_GIVEN_HELD)


# ---- English ------------------------------------------------------------------------------
_EN_FRAMES_DEV = [
    "Patient {N} was seen today.", "User {N} logged in at 09:14.", "{N} called about a refund.",
    "Dear {N}, your order has shipped.", "Thanks, {N}", "cc: {N}", "Signed by {N} on March 3.",
    "Mr. {L} asked for a callback.", "Ms. {L} is waiting in room 4.", "My name is {F} and I need help.",
    "Please forward this to {N}.", "{N} (employee #4471) requested leave.", "Account holder: {N}",
    "Meeting with {N} and the team tomorrow.", "{N} will cover the night shift.", "Contact {N} for access.",
    "According to {N}, the server was restarted.", "Reviewed by Dr. {N}.", "Hi {F}, thanks for your email.",
    "The loan was approved for {N} yesterday.", "{N}'s badge expired.", "Assigned to {N}.",
    "Customer {N} disputed the charge.", "I spoke with {N} this morning.",
]
_EN_FRAMES_HELD = [
    "Admission note: {N}, 67, admitted with shortness of breath.", "Discharge summary for {N} attached.",
    "{N} reports intermittent chest pain since Sunday.", "Consult requested by {N} from cardiology.",
    "Wire transfer initiated by {N} to a savings account.", "The joint account of {N} and {M} is overdrawn.",
    "Beneficiary: {N}", "Branch manager {N} approved the exception.", "{N} declined the overdraft protection.",
    "Radiology report reviewed with {N}.", "Follow-up with {N} in two weeks.", "Authorised signatory {N}.",
    "The patient's daughter, {N}, was present.", "Statement mailed to {N} on Friday.",
]
_EN_NAME_FREE = [
    "New York General Hospital admitted three patients.", "The Bank of America branch closes at five.",
    "Please Call Customer Service Before Friday.", "Monday Morning Meeting moved to Room B.",
    "Apple Inc and Microsoft Corp reported earnings.", "United States Postal Service delivered it.",
    "Visit the Golden Gate Bridge in San Francisco.", "Blood Pressure Normal, Heart Rate Stable.",
    "Wells Fargo Advisors sent the Annual Report.", "Saint Mary Medical Center, Emergency Department.",
    "Order Confirmation: Blue Cotton Shirt, Size Large.", "Christmas Eve Service at First Baptist Church.",
    "The Grand Canyon National Park is open.", "Dear Sir or Madam, thank you for writing.",
    "Jordan River Valley Credit Union.", "Mayo Clinic Proceedings published the Study.",
    "Los Angeles County Health Department.", "General Electric and Ford Motor Company.",
    "Lincoln Memorial University Library.", "Washington State Department of Revenue.",
    "Chase Sapphire Preferred card benefits.", "Amazon Web Services outage in Virginia.",
    "Net Income Before Taxes increased.", "Version Control System Migration Plan.",
    "Re: Project Apollo kickoff.", "Diagnosis: Type Diabetes, well controlled.", "Subject: Quarterly Review.",
    "Shipped via Federal Express to Denver.", "Lunch at Olive Garden with the team.", "Tickets for Swan Lake.",
]
_EN_HELD_LOCALES = ("en_IN", "fr_FR", "it_IT", "es_ES", "de_DE", "nl_NL")


def _en_parts(f: Any) -> tuple[str, str]:
    return str(f.first_name()), str(f.last_name())


def _fill(frame: str, name: Callable[[], str], first: Callable[[], str], last: Callable[[], str]) -> LabeledRecord:
    """Fill ``{N}``/``{M}`` (full names), ``{F}`` (given name), ``{L}`` (surname) and record spans."""
    spans: list[tuple[str, int, int]] = []
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(frame):
        if frame[i] == "{" and frame[i + 2:i + 3] == "}" and frame[i + 1] in "NMFL":
            value = {"N": name, "M": name, "F": first, "L": last}[frame[i + 1]]()
            spans.append(("PERSON", pos, pos + len(value)))
            out.append(value)
            pos += len(value)
            i += 3
        else:
            out.append(frame[i])
            pos += 1
            i += 1
    return LabeledRecord("".join(out), spans)


def generate_name_records(n: int, *, locale: str = "zh_CN", source: str = "faker", seed: int = 0,
                          name_free: float = 0.25) -> list[LabeledRecord]:
    """``n`` records; a ``name_free`` share of them are hard negatives with no name at all."""
    from faker import Faker

    if locale not in ("zh_CN", "en_US") or source not in ("faker", "held_out"):
        raise ValueError("locale is zh_CN or en_US, source is faker or held_out")
    rng = random.Random(seed)
    held = source == "held_out"
    if locale == "zh_CN":
        from faker.providers.person.zh_CN import Provider

        overlap = set(_ZH_GIVEN_HELD) & set(Provider.first_names)
        if overlap:  # the held-out set must stay outside the generator's list
            raise AssertionError(f"held-out given names also in Faker: {sorted(overlap)}")
        f = Faker("zh_CN")
        f.seed_instance(seed)
        frames, free = (_ZH_FRAMES_HELD if held else _ZH_FRAMES_DEV), _ZH_NAME_FREE
        pick = _zh_held_name if held else _zh_dev_name
        def name():
            return pick(f, rng)
        first = last = name
    else:
        fakers = [Faker(loc) for loc in (_EN_HELD_LOCALES if held else ("en_US",))]
        for i, fk in enumerate(fakers):
            fk.seed_instance(seed + i)
        state: dict[str, Faker] = {}

        def name() -> str:
            fk = rng.choice(fakers)
            state["f"] = fk
            a, b = _en_parts(fk)
            return f"{a} {b}"

        def first() -> str:
            return str(rng.choice(fakers).first_name())

        def last() -> str:
            return str(rng.choice(fakers).last_name())

        frames, free = (_EN_FRAMES_HELD if held else _EN_FRAMES_DEV), _EN_NAME_FREE
    out = []
    for _ in range(n):
        if rng.random() < name_free:
            out.append(LabeledRecord(rng.choice(free), []))
        else:
            out.append(_fill(rng.choice(frames), name, first, last))
    return out
