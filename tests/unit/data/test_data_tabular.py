"""Files: encodings, malformed input, atomic output, streaming mask, k-anonymity property."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshield.crypto.keys import generate_master_key
from torchshield.data.tabular import detect_encoding, iter_chunks, kanonymize, mask_file, scan_file
from torchshield.errors import FormatError, InputError, KeyMaterialError, PolicyError

ROWS = [("王小明", "11010519491231002X", "13812345678", "患者王小明，电话13812345678。"),
        ("李娜", "360426199101010071", "13987654321", "复诊，mail li@example.com")]


def write_csv(path, encoding="utf-8", rows=ROWS):
    text = "姓名,身份证号,手机,病历\n" + "".join(",".join(r) + "\n" for r in rows)
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("enc,expected", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("gb18030", "gb18030")])
def test_encoding_detection(tmp_path, enc, expected):
    assert detect_encoding(write_csv(tmp_path / "p.csv", enc)) == expected


def test_mask_gb18030_csv_to_parquet_with_report(tmp_path):
    src = write_csv(tmp_path / "p.csv", "gb18030")
    out = tmp_path / "clean.parquet"
    report = mask_file(src, out, policy={"columns": {"身份证号": "encrypt", "手机": {"operator": "mask",
                       "keep_first": 3, "keep_last": 4}}}, key=generate_master_key(), chunk_rows=1)
    df = pd.read_parquet(out)
    assert df["手机"].tolist() == ["138****5678", "139****4321"]
    assert df["身份证号"].str.startswith("tsenc1.").all()
    assert df["姓名"].tolist() == ["<PERSON>", "<PERSON>"] or df["姓名"].tolist()[0] != "王小明"
    assert "王小明" not in df["病历"][0] and "13812345678" not in df["病历"][0]
    assert report["rows"] == 2 and report["encoding"] == "gb18030"
    sidecar = (tmp_path / "clean.parquet.report.json").read_text(encoding="utf-8")
    for secret in ("王小明", "13812345678", "11010519491231002X"):
        assert secret not in sidecar  # the report never holds raw PII
    assert (tmp_path / "clean.parquet.policy.yaml").exists()


def test_malformed_csv_names_the_line_and_leaves_no_output(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    with pytest.raises(FormatError, match="line 3"):
        mask_file(src, out)
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))


def test_mixed_encodings_are_refused_with_the_line(tmp_path):
    src = tmp_path / "mixed.csv"
    src.write_bytes(b"a,b\n" + "王,1\n".encode() * 3 + "李,2\n".encode("gb18030"))
    with pytest.raises(FormatError, match="line 5"):
        list(iter_chunks(src, encoding="utf-8"))


def test_empty_file_and_keyless_policy(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        mask_file(empty, tmp_path / "o.csv")
    src = write_csv(tmp_path / "p.csv")
    with pytest.raises(KeyMaterialError):
        mask_file(src, tmp_path / "o.csv", policy={"default": "hash"}, key=None)
    assert not (tmp_path / "o.csv").exists()


def test_scan_reports_types_per_column_without_values(tmp_path):
    src = write_csv(tmp_path / "p.csv", "gb18030")
    result = scan_file(src)
    cols = result["columns"]
    assert cols["身份证号"]["dominant_type"] == "CN_RESIDENT_ID"
    assert cols["手机"]["types"]["CN_MOBILE"]["cells"] == 2
    assert cols["身份证号"]["identifier_class"] == "direct" and result["rows_total"] == 2
    assert "王小明" not in json.dumps(result, ensure_ascii=False)


def test_jsonl_round_trip(tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text('{"note": "mail a@b.io"}\n{"note": "ok"}\n', encoding="utf-8")
    mask_file(src, tmp_path / "o.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == [{"note": "mail <EMAIL>"}, {"note": "ok"}]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(FormatError, match="line 2"):
        list(iter_chunks(bad))


def classes_ok(table, quasi, k):
    """Independent checker: group the released rows by their quasi-identifier values."""
    sizes = table.groupby(list(quasi), dropna=False).size()
    return len(table) == 0 or int(sizes.min()) >= k


@settings(max_examples=25, deadline=None)
@given(n=st.integers(10, 120), k=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_kanonymity_property(n, k, seed):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.integers(18, 90, n), "gender": rng.choice(["M", "F"], n),
                       "zip": [f"{z:06d}" for z in rng.integers(100000, 999999, n)],
                       "dx": rng.choice(["a", "b", "c", "d"], n)})
    if n < k:
        return
    res = kanonymize(df, ["age", "gender", "zip"], k=k)
    assert classes_ok(res.table, ["age", "gender", "zip"], k)
    assert res.report["rows_released"] + res.report["suppressed_rows"] == n
    assert res.report["risk_after"]["max"] <= 1 / k + 1e-6


def test_l_diversity_and_hierarchy():
    rng = np.random.default_rng(0)
    n = 400
    regions = ["310104", "310105", "110101", "110102"]
    hier = {"region": {"310104": "上海", "310105": "上海", "110101": "北京", "110102": "北京", "上海": "中国", "北京": "中国"}}
    df = pd.DataFrame({"age": rng.integers(20, 80, n), "region": rng.choice(regions, n),
                       "dx": rng.choice(["flu", "hiv", "cold"], n)})
    res = kanonymize(df, ["age", "region"], k=5, l=2, sensitive="dx", hierarchies=hier)
    assert classes_ok(res.table, ["age", "region"], 5)
    for _, g in res.table.groupby(["age", "region"]):
        assert g["dx"].nunique() >= 2
    assert set(res.table["region"]) <= set(regions) | {"上海", "北京", "中国"}
    assert 0 <= res.report["information_loss"]["ncp"] <= 1


def test_kanon_refuses_impossible_targets():
    df = pd.DataFrame({"age": [30, 31, 32], "dx": ["a", "a", "a"]})
    with pytest.raises(PolicyError):
        kanonymize(df, ["age"], k=5)
    with pytest.raises(PolicyError):
        kanonymize(pd.DataFrame({"age": list(range(10)), "dx": ["a"] * 10}), ["age"], k=2, l=2, sensitive="dx")
    with pytest.raises(InputError):
        kanonymize(df, ["nope"], k=2)


def test_parallel_mask_matches_serial(tmp_path):
    rows = [(f"王小{c}", "11010519491231002X", f"1381234{i:04d}", f"患者王小{c}，电话1381234{i:04d}")
            for i, c in enumerate("明红刚强伟芳敏静丽军")]
    src = write_csv(tmp_path / "p.csv", rows=rows)
    key = generate_master_key()
    pol = {"columns": {"身份证号": "hash", "姓名": {"operator": "pseudonymize", "type": "PERSON"}}}
    r1 = mask_file(src, tmp_path / "a.csv", policy=pol, key=key, chunk_rows=3)
    r2 = mask_file(src, tmp_path / "b.csv", policy=pol, key=key, chunk_rows=3, workers=2)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert r1["changes_per_column"] == r2["changes_per_column"]
