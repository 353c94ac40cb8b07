"""The assessment on real bundles and tables: each section's verdict follows from the input
(signed or not, encrypted or not, tampered, DP record, PII left in the data), a missing
capability is reported as skipped, and the report never carries raw PII or keys."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
from assess_subjects import make_tables, train_bundle

from torchshield.assess import AssessInputs, assess, render_html, write_report
from torchshield.assess.checks import SECTIONS
from torchshield.assess.checks.capability import require
from torchshield.assess.subject import NotAssessable


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subject")
    train, test = make_tables(folder)
    return {
        "train": train,
        "test": test,
        "plain": train_bundle(train, folder / "plain.tsb"),
        "folder": folder,
    }


def _findings(report, section_id):
    return {f.check: f for f in report.section(section_id).findings}


def test_plain_bundle_sections(subject):
    report = assess(
        AssessInputs(model=subject["plain"], data=subject["test"], train_data=subject["train"], quick=True)
    )
    assert [s.id for s in report.sections] == [sid for sid, _, _ in SECTIONS]
    f = _findings(report, "model-file")
    assert f["scan"].verdict == "pass" and f["integrity"].verdict == "pass"
    assert f["signature"].verdict == "warn" and "not signed" in f["signature"].reason
    assert f["encryption"].verdict == "warn"
    p = _findings(report, "privacy")
    assert p["dp-record"].verdict == "warn" and "without differential privacy" in p["dp-record"].reason
    assert p["membership-audit"].verdict in {"pass", "warn", "fail"}
    priv = report.section("privacy").metrics
    assert 0.0 <= priv["attack_auc"] <= 1.0 and priv["members"] == 120 and priv["nonmembers"] == 120
    rob = report.section("robustness").metrics
    clean = rob["clean_accuracy"]
    assert clean > 0.7  # the label is learnable: a broken loader would give ~0.5
    for curve in rob["robust_accuracy"].values():
        assert curve[0] == pytest.approx(clean) and all(a <= clean + 1e-9 for a in curve)
    assert curve[-1] < clean  # the largest budget hurts a non-hardened model
    assert report.section("watermark").verdict == "warn"
    assert report.section("pii-residue").verdict == "pass"
    assert report.section("serving").verdict == "skipped"
    charts = {c.id for s in report.sections for c in s.charts}
    assert {"privacy-roc", "robustness-curves"} <= charts


def test_signed_encrypted_bundle_needs_key_and_pubkey(subject, tmp_path, key_file, signer):
    model = train_bundle(
        subject["train"],
        tmp_path / "locked.tsb",
        epochs=2,
        output={"key_file": str(key_file), "signing_key": str(signer[0])},
        privacy={"epsilon": 20.0, "delta": 1e-5},
    )
    keyless = assess(
        AssessInputs(model=model, data=subject["test"], quick=True), only=("model-file", "robustness")
    )
    f = _findings(keyless, "model-file")
    assert f["encryption"].verdict == "pass" and f["signature"].verdict == "warn"
    assert "--pubkey" in f["signature"].action
    rob = keyless.section("robustness")
    assert rob.verdict == "skipped" and "encrypted" in rob.findings[0].reason

    from torchshield.crypto.keys import read_key_file

    full = assess(
        AssessInputs(
            model=model,
            data=subject["test"],
            train_data=subject["train"],
            key=read_key_file(key_file),
            pubkey=signer[1],
            quick=True,
        ),
        only=("model-file", "privacy"),
    )
    f = _findings(full, "model-file")
    assert f["signature"].verdict == "pass" and "expected signer" in f["signature"].reason
    assert "authenticates" in f["integrity"].reason
    p = _findings(full, "privacy")
    assert p["dp-record"].verdict == "fail"  # epsilon 20 protects little
    assert full.section("privacy").metrics["claimed_epsilon"] == pytest.approx(20.0, rel=0.05)


def test_wrong_signer_and_tampering_fail(subject, tmp_path, signer):
    from torchshield.crypto.signing import generate_signing_key

    model = train_bundle(
        subject["train"], tmp_path / "signed.tsb", epochs=1, output={"signing_key": str(signer[0])}
    )
    _, other_pub = generate_signing_key(tmp_path / "other")
    r = assess(AssessInputs(model=model, pubkey=other_pub), only=("model-file",))
    assert _findings(r, "model-file")["signature"].verdict == "fail"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the tensor data
    model.write_bytes(bytes(data))
    r = assess(AssessInputs(model=model), only=("model-file",))
    assert r.section("model-file").verdict == "fail"
    assert _findings(r, "model-file")["integrity"].verdict == "fail"


def test_pickle_that_runs_code_fails_scan(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    r = assess(AssessInputs(model=path))
    f = _findings(r, "model-file")
    assert f["scan"].verdict == "fail" and "run code" in f["scan"].reason
    assert f["bundle"].verdict == "warn"
    assert r.verdict == "fail"
    assert r.section("robustness").verdict == "skipped"


def test_pii_residue_counts_without_values(tmp_path):
    train, _ = make_tables(tmp_path / "t", rows=60, pii=True)
    import pandas as pd

    names = pd.read_parquet(train)["name"].tolist()
    r = assess(AssessInputs(model=tmp_path / "t" / "train.parquet", train_data=train), only=("pii-residue",))
    f = _findings(r, "pii-residue")["training-pii"]
    assert f.verdict == "fail" and "name (PERSON)" in f.reason and "phone" in f.reason
    doc = json.dumps(r.to_dict(), ensure_ascii=False) + render_html(r)
    assert not any(n in doc for n in names)  # counts only, never the values


def test_missing_capability_is_skipped_not_faked(subject, monkeypatch):
    with pytest.raises(NotAssessable, match="not available in this build"):
        require("torchshield.no_such_capability", "the frobnicator")
    monkeypatch.setitem(sys.modules, "torchshield.privacy.audit", None)  # import now raises ImportError
    r = assess(
        AssessInputs(model=subject["plain"], data=subject["test"], train_data=subject["train"]),
        only=("privacy",),
    )
    audit = _findings(r, "privacy")["membership-audit"]
    assert audit.verdict == "skipped" and "not available in this build" in audit.reason


def test_written_report_is_self_contained_and_escaped(subject, tmp_path):
    r = assess(
        AssessInputs(model=subject["plain"], data=subject["test"], train_data=subject["train"], quick=True)
    )
    r.section("watermark").add("hostile", "warn", "<script>alert(1)</script>", "<img src=x onerror=y>")
    paths = write_report(r, tmp_path / "report")
    html = paths["html"].read_text(encoding="utf-8")
    for s in r.sections:
        assert f'id="{s.id}"' in html
    assert "<script" not in html and "&lt;script&gt;" in html
    assert 'src="http' not in html and 'href="http' not in html
    assert html.count("data:image/png;base64,") == sum(len(s.charts) for s in r.sections)
    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert doc["format"] == "torchshield-report" and doc["verdict"] == r.verdict
    assert {s["id"] for s in doc["sections"]} == {sid for sid, _, _ in SECTIONS}


def test_report_cli_exit_codes(subject, tmp_path, capsys):
    from torchshield.cli.app import run

    code = run(
        [
            "report",
            str(subject["plain"]),
            "--data",
            str(subject["test"]),
            "--out",
            str(tmp_path / "r"),
            "--quick",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == (1 if out["verdict"] == "fail" else 0)
    assert Path(out["files"]["html"]).is_file() and out["sections"]["model-file"] == "warn"  # unsigned
    assert run(["report", str(tmp_path / "missing.tsb"), "--out", str(tmp_path / "r2")]) == 2
    assert "model file not found" in capsys.readouterr().err
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    assert run(["report", str(evil), "--out", str(tmp_path / "r3"), "--json"]) == 1


@pytest.mark.parametrize("quick", [True, False])
def test_robustness_attacks_exist(quick):
    from torchshield.assess.checks.robustness import _attacks
    from torchshield.robust.attacks import available_attacks

    assert set(_attacks(quick)) <= set(available_attacks())
