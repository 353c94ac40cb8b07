"""`torchshield model protect/export` options for users' models: usage errors are exit 2 with a
one-line message naming the option; what protect drops is said and counted."""

from __future__ import annotations

import json

import byom_models as bm
import pytest
import torch

from torchshield.cli.app import run


def _run(capsys, *argv):
    code = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def resnet_pt(tmp_path):
    model = bm.trained_resnet(num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    opt.step()
    torch.save({"model_state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 4}, tmp_path / "ck.pt")
    return tmp_path / "ck.pt"


def test_protect_says_what_it_dropped(resnet_pt, tmp_path, capsys):
    code, out, err = _run(capsys, "model", "protect", resnet_pt, "--out", tmp_path / "a.tsb",
                          "--factory", "byom_models:resnet_mini", "--arch-option", "num_classes=4")
    assert code == 0, err
    n_momentum = sum(1 for p in bm.ResNetMini().parameters())  # SGD momentum: one buffer per parameter
    assert f"dropped 2 training-state entries: optimizer ({n_momentum} tensors), epoch (4)" in out
    assert "--keep-training-state" in out
    code, out, err = _run(capsys, "model", "protect", resnet_pt, "--out", tmp_path / "b.tsb", "--keep-training-state",
                          "--factory", "byom_models:resnet_mini", "--arch-option", "num_classes=4", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["protect"]["kept_training_state"] and doc["protect"]["dropped_count"] == 0
    assert doc["training_state"]["epoch"] == 4 and doc["architecture"]["target"] == "byom_models:resnet_mini"
    assert doc["preprocessing"] is None or "output" not in (doc["preprocessing"] or {})  # no --input-shape: no probe


@pytest.mark.parametrize(("extra", "message"), [
    (["--arch", "x", "--factory", "a:b"], "not both"),
    (["--arch-option", "num_classes=3"], "--arch-option needs --arch or --factory"),
    (["--factory", "not a target"], "is not 'package.module:function'"),
    (["--input-shape", "3,x"], "--input-shape"),
    (["--input-range", "1,0"], "--input-range"),
])
def test_protect_usage_errors(resnet_pt, tmp_path, capsys, extra, message):
    code, _, err = _run(capsys, "model", "protect", resnet_pt, "--out", tmp_path / "x.tsb", *extra)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "x.tsb").exists()


def test_export_format_is_checked(resnet_pt, tmp_path, capsys):
    _run(capsys, "model", "protect", resnet_pt, "--out", tmp_path / "a.tsb")
    code, _, err = _run(capsys, "model", "export", tmp_path / "a.tsb", "--format", "onnx", "--out", tmp_path / "o")
    assert code == 2 and "--format" in err
    code, _, err = _run(capsys, "model", "export", tmp_path / "a.tsb", "--format", "hf", "--out", tmp_path / "o")
    assert code == 2 and "not a Hugging Face one" in err and not (tmp_path / "o").exists()
    code, out, err = _run(capsys, "model", "export", tmp_path / "a.tsb", "--out", tmp_path / "o.safetensors",
                          "--json")
    assert code == 0 and json.loads(out)["tensors"] == len(bm.ResNetMini().state_dict())
