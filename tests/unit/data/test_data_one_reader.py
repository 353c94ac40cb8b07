"""One table reader for `data scan`, `data mask` and `data query` (issue 20): a GB18030 CSV that
scan and mask read is also read by query, with the same numbers a UTF-8 copy gives; malformed
input names the file and line."""

import json

import pandas as pd
import pytest

from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file
from torchshield.data.tabular import read_table
from torchshield.errors import FormatError
from torchshield.privacy.queries import fingerprint

ROWS = "".join(f"王小{c},{20 + i},1381234{i:04d},{'北京' if i % 2 else '上海'}\n"
               for i, c in enumerate("明红刚强伟芳敏静丽军"))
TEXT = "姓名,age,phone,city\n" + ROWS


def _write(tmp_path, name, encoding):
    p = tmp_path / name
    p.write_bytes(TEXT.encode(encoding))
    return p


def test_gb18030_read_by_scan_mask_and_query(tmp_path, capsys):
    gb = _write(tmp_path, "gb.csv", "gb18030")
    utf = _write(tmp_path, "utf.csv", "utf-8")
    assert run(["data", "scan", str(gb), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["encoding"] == "gb18030"
    key = tmp_path / "k.key"
    write_key_file(key)
    pol = tmp_path / "pol.yaml"
    pol.write_text("columns:\n  phone: {operator: mask, keep_first: 3, keep_last: 4}\n", encoding="utf-8")
    out = tmp_path / "clean.csv"
    assert run(["data", "mask", str(gb), "-o", str(out), "--policy", str(pol), "--key-file", str(key)]) == 0
    capsys.readouterr()
    masked = pd.read_csv(out, dtype=str)
    assert len(masked) == 10 and masked["phone"].str.contains(r"\*").all()
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    answers = {}
    for p, budget in ((gb, ["--budget-epsilon", "5"]), (utf, [])):
        assert run(["data", "query", str(p), "count", "--epsilon", "0.5", *budget,
                    "--ledger", ledger, "--key-file", str(key), "--json"]) == 0, capsys.readouterr()
        answers[p.name] = json.loads(capsys.readouterr().out)
    # the same rows in two encodings are one data set (one fingerprint, one budget): the ledger
    # answers the repeated query from its record instead of charging it twice
    assert answers["gb.csv"]["dataset_id"] == answers["utf.csv"]["dataset_id"]
    assert answers["gb.csv"]["answer"] == answers["utf.csv"]["answer"]
    assert answers["utf.csv"]["spent"]["epsilon"] == pytest.approx(0.5)


def test_typed_read_equals_pandas_default_for_utf8(tmp_path):
    utf = _write(tmp_path, "utf.csv", "utf-8")
    ours = read_table(utf, typed=True)
    pd.testing.assert_frame_equal(ours, pd.read_csv(utf))
    assert fingerprint(ours) == fingerprint(read_table(_write(tmp_path, "gb.csv", "gb18030"), typed=True))
    assert ours["age"].dtype.kind == "i"
    untyped = read_table(utf)
    assert untyped["phone"].tolist()[0] == "13812340000" and untyped["age"].tolist()[0] == "20"


def test_malformed_row_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes((TEXT + "王五,1,2,3,4,5\n").encode("gb18030"))
    with pytest.raises(FormatError, match=r"bad\.csv.*line 12"):
        read_table(bad, typed=True)
    key = tmp_path / "k.key"
    write_key_file(key)
    assert run(["data", "query", str(bad), "count", "--epsilon", "0.5", "--budget-epsilon", "5",
                "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--key-file", str(key)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "Traceback" not in err
