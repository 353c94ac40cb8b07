"""Chinese recognisers: valid numbers found with exact spans, checksum failures and decoys not."""

import pytest

from torchshield.data import find_pii
from torchshield.data.pii import ENTITY_TYPES, RecognizerRegistry, default_registry
from torchshield.errors import InputError


def types_of(text, **kw):
    return [(f.type, f.text) for f in find_pii(text, **kw)]


@pytest.mark.parametrize("text,etype,value", [
    ("身份证号11010519491231002X，", "CN_RESIDENT_ID", "11010519491231002X"),
    ("证件号码：360426 19910101 0071", "CN_RESIDENT_ID", "360426 19910101 0071"),
    ("手机13812345678联系", "CN_MOBILE", "13812345678"),
    ("电话+86 138-1234-5678", "CN_MOBILE", "+86 138-1234-5678"),
    ("办公电话010-62345678转123", "CN_LANDLINE", "010-62345678转123"),
    ("电话0571-88886666", "CN_LANDLINE", "0571-88886666"),
    ("统一社会信用代码91110000600037341L。", "CN_USCC", "91110000600037341L"),
    ("护照号EF1260892", "CN_PASSPORT", "EF1260892"),
    ("港澳通行证C12345678", "CN_HK_MACAU_PERMIT", "C12345678"),
    ("车牌号京A12345", "CN_LICENSE_PLATE", "京A12345"),
    ("新能源车牌粤BD12345", "CN_LICENSE_PLATE", "粤BD12345"),
    ("银行卡6212260200000000006", "BANK_CARD", "6212260200000000006"),
    ("出生日期1990年5月3日", "DATE_OF_BIRTH", "1990年5月3日"),
])
def test_valid_chinese_entities(text, etype, value):
    found = types_of(text)
    assert (etype, value) in found, found


@pytest.mark.parametrize("text", [
    "订单号110101199001011234",          # ID shape, wrong check digit
    "身份证号110105194912310021",         # wrong check even with context: hidden by default
    "时间戳1700000000000",                # 13-digit timestamp
    "流水号6212260200000000007",          # Luhn fails
    "编号14012345678",                    # 140: IoT range, not a mobile
    "统一社会信用代码91110000600037341M",  # wrong check character
])
def test_invalid_numbers_not_reported(text):
    assert types_of(text) == []


def test_checksum_failure_with_context_is_kept_at_low_score():
    low = find_pii("身份证号110105194912310021", min_score=0.0)
    assert [f.type for f in low] == ["CN_RESIDENT_ID"] and low[0].score < 0.5


def test_fullwidth_digits_map_back_to_original_offsets():
    text = "身份证：１１０１０５１９４９１２３１００２Ｘ。"
    [f] = find_pii(text)
    assert f.type == "CN_RESIDENT_ID" and text[f.start:f.end] == f.text == "１１０１０５１９４９１２３１００２Ｘ"


def test_cjk_adjacent_numbers_found_without_word_boundaries():
    # \b would miss both: Han characters are \w in Python.
    found = types_of("号11010519491231002X和卡6212260200000000006存")
    assert [t for t, _ in found] == ["CN_RESIDENT_ID", "BANK_CARD"]


@pytest.mark.parametrize("text,name", [
    ("患者王小明，男，45岁。", "王小明"),
    ("联系人：欧阳娜娜，电话", "欧阳娜娜"),
    ("经核实，卢梅的身份证已过期", "卢梅"),
    ("请联系张建国先生", "张建国"),
    ("姓名: 司马懿", "司马懿"),
])
def test_chinese_names_with_cues(text, name):
    assert ("PERSON", name) in types_of(text)


@pytest.mark.parametrize("text", ["诊断：高血压二级", "今天天气很好", "方便的时候回电"])
def test_chinese_words_that_start_with_surnames_are_not_names(text):
    assert [t for t, _ in types_of(text) if t == "PERSON"] == []


@pytest.mark.parametrize("text,address", [
    ("住址北京市朝阳区建国路88号，", "北京市朝阳区建国路88号"),
    ("现住广东省深圳市南山区科技园路1号3栋502室。", "广东省深圳市南山区科技园路1号3栋502室"),
    ("地址：杭州市西湖区文三路90号", "杭州市西湖区文三路90号"),
])
def test_chinese_addresses(text, address):
    assert ("ADDRESS", address) in types_of(text)


def test_bare_province_is_not_an_address():
    assert types_of("他去过北京。") == []


def test_types_filter_and_unknown_type():
    text = "患者王小明，手机13812345678"
    assert [f.type for f in find_pii(text, types={"CN_MOBILE"})] == ["CN_MOBILE"]
    from torchshield.errors import InputError

    with pytest.raises(InputError):
        find_pii(text, types={"NOPE"})


def test_registry_accepts_user_recognizer_without_core_edit():
    reg = default_registry()
    reg.add_pattern("employee_no", "EMPLOYEE_NO", r"EMP-[0-9]{6}", context=("工号",), score=0.6)
    found = find_pii("工号EMP-123456", registry=reg)
    assert [(f.type, f.text) for f in found] == [("EMPLOYEE_NO", "EMP-123456")]
    with pytest.raises(InputError, match="employee_no"):
        reg.add_pattern("employee_no", "X", "x")
    reg.add_function("always", ["CUSTOM"], lambda t: [("CUSTOM", 0, 1, 0.9)])
    assert ("CUSTOM", 0, 1) in [(f.type, f.start, f.end) for f in find_pii("abc", registry=reg)]


def test_registry_knows_every_documented_type():
    assert set(ENTITY_TYPES) <= default_registry().entity_types
    assert isinstance(default_registry(), RecognizerRegistry)
