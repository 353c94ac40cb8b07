"""`torchshield data ...` in-process: JSON output and exit codes (0 ok, 1 found, 2 bad input, 3 refused)."""

import json

import pandas as pd

from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file


def csv(tmp_path, name="p.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(("name,id_number,phone,age,gender,zip,diagnosis,notes\n" + "".join(
        f"王小{c},11010519491231002X,1381234{i:04d},{30 + i % 7},{'男' if i % 2 else '女'},{100000 + i % 3},"
        f"{['flu', 'cold', 'asthma'][i % 3]},患者王小{c}电话1381234{i:04d}\n"
        for i, c in enumerate("明红刚强伟芳敏静丽军洋勇艳杰娟涛超平刚桂"))).encode(encoding))
    return p


def test_scan_json(tmp_path, capsys):
    assert run(["data", "scan", str(csv(tmp_path, encoding="gb18030")), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["encoding"] == "gb18030" and out["columns"]["phone"]["dominant_type"] == "CN_MOBILE"


def test_find_exit_codes(capsys):
    assert run(["data", "find", "手机13812345678", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["findings"][0]["type"] == "CN_MOBILE" and "text" not in out["findings"][0]
    assert run(["data", "find", "nothing here"]) == 0


def test_mask_unmask_kanon_round_trip(tmp_path, capsys):
    key = tmp_path / "k.key"
    write_key_file(key)
    pol = tmp_path / "pol.yaml"
    pol.write_text("columns:\n  id_number: encrypt\n  name: {operator: pseudonymize, type: PERSON}\n"
                   "  phone: {operator: hash}\n", encoding="utf-8")
    src = csv(tmp_path)
    out = tmp_path / "clean.csv"
    assert run(["data", "mask", str(src), "--policy", str(pol), "--out", str(out), "-k", str(key), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["changes_per_column"]["id_number"] == {"encrypt": 20}
    clean = pd.read_csv(out, dtype=str)
    assert not clean["id_number"].str.contains("110105").any()
    back = tmp_path / "back.csv"
    assert run(["data", "unmask", str(out), "--out", str(back), "-k", str(key)]) == 0
    assert (pd.read_csv(back, dtype=str)["id_number"] == "11010519491231002X").all()
    capsys.readouterr()
    rel = tmp_path / "release.parquet"
    assert run(["data", "kanon", str(out), "--k", "3", "--quasi", "age,gender,zip", "--sensitive", "diagnosis",
                "--l", "2", "--out", str(rel), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["min_class_size"] >= 3 and rep["risk_after"]["max"] <= 1 / 3 + 1e-6
    table = pd.read_parquet(rel)
    assert table.groupby(["age", "gender", "zip"]).size().min() >= 3


def test_mask_that_changes_nothing_says_so_instead_of_de_identified(tmp_path, capsys):
    """A table with no PII, or a policy that keeps every column, writes the input unchanged: the
    report counts 0 values changed and does not call the output de-identified."""
    plain = tmp_path / "plain.csv"
    plain.write_text("item,count\nflu,3\ncold,4\n", encoding="utf-8")
    keep = tmp_path / "keep.yaml"
    keep.write_text("columns:\n  name: {operator: keep}\n  id_number: {operator: keep}\n  phone: {operator: keep}\n"
                    "  notes: {operator: keep}\n", encoding="utf-8")
    for src, extra in [(plain, []), (csv(tmp_path), ["--policy", str(keep)])]:
        out = tmp_path / f"out-{src.stem}.csv"
        assert run(["data", "mask", str(src), "--out", str(out), *extra, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["values_changed"] == 0 and report["changes_per_column"] == {}
        assert report["note"].startswith("nothing changed") and "de-identified" not in report["note"]
        assert out.read_text(encoding="utf-8") == src.read_text(encoding="utf-8")
    masked = tmp_path / "masked.csv"
    assert run(["data", "mask", str(csv(tmp_path)), "--out", str(masked), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["values_changed"] > 0 and report["note"].startswith("de-identified")


def test_bad_inputs_exit_2_without_output(tmp_path, capsys):
    src = csv(tmp_path)
    out = tmp_path / "o.csv"
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns:\n  phone: {operator: maskk}\n", encoding="utf-8")
    assert run(["data", "mask", str(src), "--policy", str(bad), "--out", str(out)]) == 2
    assert "columns.phone.operator" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    missing.write_text("columns:\n  phnoe: hash\n", encoding="utf-8")
    write_key_file(tmp_path / "k.key")
    assert run(["data", "mask", str(src), "--policy", str(missing), "--out", str(out), "-k",
                str(tmp_path / "k.key")]) == 2
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text("columns:\n  phone: hash\n", encoding="utf-8")
    assert run(["data", "mask", str(src), "--policy", str(keyed), "--out", str(out)]) == 2
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert run(["data", "scan", str(empty)]) == 2
    assert not out.exists()
    assert run(["data", "kanon", str(src), "--k", "50", "--quasi", "age", "--out", str(tmp_path / "r.csv")]) == 3
