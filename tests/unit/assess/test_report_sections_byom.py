"""`report --only/--skip`, a section that cannot run becomes a "skipped: why" finding (never an
aborted report), and the report on models users bring (image CNN, token LM)."""

from __future__ import annotations

import json

import byom_models as bm
import pytest
import torch
from safetensors.torch import save_file

from torchshield.assess import AssessInputs, assess
from torchshield.assess.findings import SKIPPED
from torchshield.cli.app import run
from torchshield.model.loading import protect_model


def _run(capsys, *argv):
    code = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    from torchshield.crypto.signing import generate_signing_key

    root = tmp_path_factory.mktemp("report")
    generate_signing_key(root / "signer")
    torch.save(bm.trained_resnet(num_classes=4).state_dict(), root / "resnet.pt")
    protect_model(root / "resnet.pt", root / "resnet.tsb", sign_with=root / "signer.key",
                  architecture={"kind": "factory", "target": "byom_models:resnet_mini", "kwargs": {"num_classes": 4}},
                  input_spec={"kind": "image", "shape": [3, 16, 16], "dtype": "float32", "min": 0.0, "max": 1.0})
    g = torch.Generator().manual_seed(0)
    save_file({"inputs": torch.rand(8, 3, 16, 16, generator=g), "labels": torch.randint(0, 4, (8,), generator=g)},
              root / "test.safetensors")
    return root


def test_only_and_skip_choose_sections(resnet, tmp_path, capsys):
    code, out, err = _run(capsys, "report", resnet / "resnet.tsb", "--only", "model-file", "--out", tmp_path / "a",
                          "--json")
    assert code in (0, 1), err
    assert list(json.loads(out)["sections"]) == ["model-file"]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert [s["id"] for s in report["sections"]] == ["model-file"]
    code, out, err = _run(capsys, "report", resnet / "resnet.tsb", "--skip", "robustness,privacy", "--skip", "serving",
                          "--out", tmp_path / "b", "--json")
    assert code in (0, 1), err
    assert list(json.loads(out)["sections"]) == ["model-file", "watermark", "pii-residue"]


def test_unknown_section_is_bad_input(resnet, tmp_path, capsys):
    code, _, err = _run(capsys, "report", resnet / "resnet.tsb", "--only", "robustnes", "--out", tmp_path / "c")
    assert code == 2 and "robustnes" in err and "robustness" in err and not (tmp_path / "c").exists()
    code, _, err = _run(capsys, "report", resnet / "resnet.tsb", "--only", "privacy", "--skip", "privacy",
                        "--out", tmp_path / "d")
    assert code == 2 and "no section" in err


def test_a_crashing_section_becomes_a_skipped_finding(resnet, monkeypatch):
    import torchshield.assess.report as report_mod

    def boom(ctx):
        raise RuntimeError("shape mismatch deep inside a user's model\nsecond line")

    sections = tuple((sid, title, boom if sid == "watermark" else check) for sid, title, check in report_mod.SECTIONS)
    monkeypatch.setattr(report_mod, "SECTIONS", sections)
    result = assess(AssessInputs(model=resnet / "resnet.tsb"), only=("model-file", "watermark"))
    wm = result.section("watermark")
    assert wm.verdict == SKIPPED
    assert wm.findings[0].reason == ("skipped: could not run on this model: RuntimeError: shape mismatch deep inside "
                                     "a user's model")
    assert result.section("model-file").verdict != SKIPPED  # the other section still ran


def test_robustness_runs_on_a_users_cnn_in_natural_shape(resnet, tmp_path, capsys):
    code, out, err = _run(capsys, "report", resnet / "resnet.tsb", "--data", resnet / "test.safetensors",
                          "--pubkey", resnet / "signer.pub", "--only", "robustness", "--quick",
                          "--out", tmp_path / "r", "--json")
    assert code in (0, 1), err
    section = json.loads((tmp_path / "r" / "report.json").read_text())["sections"][0]
    assert section["verdict"] != SKIPPED, section["findings"]
    assert section["metrics"]["examples"] == 8 and section["metrics"]["input_bounds"] == [0.0, 1.0]


def test_unsigned_factory_model_is_skipped_with_the_reason(resnet, tmp_path):
    result = assess(AssessInputs(model=resnet / "resnet.tsb", data=resnet / "test.safetensors"), only=("robustness",))
    finding = result.section("robustness").findings[0]
    assert finding.verdict == SKIPPED and "origin is not proven" in finding.reason


def test_token_model_report_completes(tmp_path, capsys):
    pytest.importorskip("transformers")
    protect_model(bm.tiny_gpt2(tmp_path / "gpt2"), tmp_path / "g.tsb")
    code, out, err = _run(capsys, "report", tmp_path / "g.tsb",
                          "--out", tmp_path / "r", "--json")
    assert code in (0, 1), err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    robust = next(s for s in report["sections"] if s["id"] == "robustness")
    assert robust["verdict"] == SKIPPED and "token ids" in robust["findings"][0]["reason"]
