"""Per-type precision and recall on a seeded, labelled corpus (with decoys) against thresholds."""

import pytest

from torchshield.data import find_pii
from torchshield.data.pii.evaluate import score_spans
from torchshield.data.synth import generate_records


@pytest.fixture(scope="module", params=["zh_CN", "en_US"])
def scored(request):
    recs = generate_records(300, locale=request.param, seed=7)
    preds = [[(f.type, f.start, f.end) for f in find_pii(r.text)] for r in recs]
    return request.param, score_spans([r.spans for r in recs], preds)


# Faker's plates include authority letter I, which GA 36 does not issue: recall below 1 is correct.
FLOOR = {"CN_LICENSE_PLATE": 0.9, "PHONE_NUMBER": 0.95, "PERSON": 0.95, "ADDRESS": 0.95}


def test_per_type_precision_recall(scored):
    locale, scores = scored
    for etype, s in scores.items():
        if etype == "micro" or s["gold"] == 0:
            continue
        floor = FLOOR.get(etype, 0.98)
        assert s["recall"] >= floor, (locale, etype, s)
        assert s["precision"] >= 0.98, (locale, etype, s)
    assert scores["micro"]["f1"] >= 0.98


def test_decoys_are_not_detected(scored):
    locale, scores = scored
    predicted_without_gold = {t: s for t, s in scores.items() if t != "micro" and s["gold"] == 0}
    assert sum(s["predicted"] for s in predicted_without_gold.values()) <= 2


HELD_OUT = ["患者诸葛亮，男", "申请人钱学森（", "联系人：上官婉儿，", "客户岳云鹏先生，", "经办人：冼星海。"]


def test_chinese_names_not_from_the_generator():
    hits = sum(any(f.type == "PERSON" for f in find_pii(t)) for t in HELD_OUT)
    assert hits == len(HELD_OUT)


# Hand-written clinical sentences, not from the generator: names with and without cues, and
# name-free sentences full of surname characters. Measured, not tuned to 1.0 (docs/data.md).
NAMED = [("王芳复诊，血压控制尚可。", "王芳"), ("主治医师：李建国", "李建国"), ("家属张伟表示同意手术。", "张伟"),
         ("今日由刘洋护士完成换药。", "刘洋"), ("患者陈静，女，45岁，因胸痛入院。", "陈静"), ("转诊自赵磊医生。", "赵磊"),
         ("联系人黄晓明电话13800000000", "黄晓明"), ("与周杰确认了预约时间", "周杰"), ("孙丽的检查报告已出。", "孙丽"),
         ("签字：吴昊天", "吴昊天"), ("病人郑秀英今晨发热。", "郑秀英"), ("马明亮先生于昨日出院。", "马明亮"),
         ("何静和她的丈夫一起来院。", "何静"), ("申请人：郭子豪", "郭子豪"), ("高血压病史十年，患者罗敏否认过敏史。", "罗敏"),
         ("经办人梁晨，审核人宋雨桐。", "梁晨"), ("经办人梁晨，审核人宋雨桐。", "宋雨桐"), ("Dr. 欧阳锋查房后调整用药。", "欧阳锋"),
         ("请通知谢婷婷来取报告。", "谢婷婷"), ("唐宇航，男，32岁，体检。", "唐宇航")]
NAME_FREE = ["方案已确认，明日手术。", "金额为500元，已缴费。", "江苏省人民医院会诊意见。", "高度怀疑肺炎，建议复查。",
             "于是决定手术治疗。", "何时复查请电话预约。", "常规检查未见异常。", "安排明天上午手术。", "周一门诊随访。",
             "张主任会诊后建议手术。", "白细胞计数升高。", "黄疸指数正常。", "林医生查房。", "万一出现发热及时就诊。",
             "程序已完成。", "任何不适随诊。", "石膏固定四周。", "毛发稀疏。", "段落结束。", "钟表走时正常。"]


def test_held_out_clinical_sentences():
    found = sum(any(f.type == "PERSON" and f.text == name for f in find_pii(t)) for t, name in NAMED)
    false = sum(f.type == "PERSON" for t in NAME_FREE for f in find_pii(t))
    assert found >= 16 and false <= 1, (found, false)  # measured 17/20 and 0 at the default threshold
