"""`torchshield train CONFIG`: config validation, dispatch to other capabilities, the bundle it writes."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml

import torchshield
from torchshield.cli.app import run
from torchshield.crypto.keys import read_key_file, write_key_file
from torchshield.crypto.signing import generate_signing_key
from torchshield.errors import InputError
from torchshield.train import build_model, evaluate, load_dataset
from torchshield.train.config import TrainConfig

BASE = {"model": {"type": "mlp", "hidden": [32]}, "data": "sklearn:digits",
        "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9}, "epochs": 2, "batch_size": 128, "seed": 0,
        "output": {"bundle": "out.tsb"}}


def _write(tmp_path, **changes):
    doc = {**BASE, **changes}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_private_training_writes_signed_encrypted_bundle_with_privacy_record(tmp_path, capsys):
    write_key_file(tmp_path / "master.key")
    generate_signing_key(tmp_path / "signer")
    cfg = _write(tmp_path, output={"bundle": "out.tsb", "key_file": "master.key", "signing_key": "signer.key"})
    # YAML reads 1e-5 as a string: accepted as a number
    text = cfg.read_text() + "privacy: {epsilon: 3, delta: 1e-5, max_grad_norm: 1.0}\n"
    cfg.write_text(text)
    assert run(["train", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    info = torchshield.inspect(tmp_path / "out.tsb")
    assert info.signed and info.encrypted
    privacy = info.manifest["privacy"]
    assert privacy == out["privacy"]
    assert 2.95 <= privacy["epsilon"] <= 3.0 and privacy["delta"] == 1e-5 and privacy["accountant"] == "rdp"
    assert privacy["mode"] == "ghost" and privacy["steps"] == 2 * round(1438 / 128)
    assert "master.key" not in json.dumps(info.manifest)  # key paths stay out of the manifest
    # the stored weights are the trained model: same test accuracy as reported
    data = load_dataset("sklearn:digits")
    model = build_model(BASE["model"], in_shape=data.input_shape, num_classes=10)
    model.load_state_dict(torchshield.load(tmp_path / "out.tsb", key=read_key_file(tmp_path / "master.key"),
                                           verify_with=tmp_path / "signer.pub"))
    assert evaluate(model, data.test.loader(512))["accuracy"] == pytest.approx(out["metrics"]["test"]["accuracy"])
    assert run(["model", "inspect", str(tmp_path / "out.tsb")]) == 0
    assert "noise_multiplier" in capsys.readouterr().out


@pytest.mark.parametrize("changes, fragment", [
    ({"privacyy": {"epsilon": 1}}, "unknown key 'privacyy'"),
    ({"privacy": {"epsilon": 0}}, "epsilon must be > 0"),
    ({"privacy": {"epsilon": 1, "delta": 0.01}}, ">= 1/N for N=1438"),
    ({"privacy": {"epsilon": 1, "noise": 2}}, "privacy: unknown key 'noise'"),
    ({"optimizer": {"name": "lbfgs"}}, "optimizer.name"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"adversarial": {"method": "pgd", "eps": 0.1}, "augment": {"gaussian_noise": 0.1}}, "not both"),
])
def test_bad_configs_exit_2_naming_the_field(tmp_path, capsys, changes, fragment):
    assert run(["train", str(_write(tmp_path, **changes))]) == 2
    assert fragment in capsys.readouterr().err


def test_existing_bundle_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "out.tsb").write_bytes(b"x")
    assert run(["train", str(_write(tmp_path))]) == 2
    assert "already exists" in capsys.readouterr().err


def test_augment_section_is_dispatched_to_robust_training(tmp_path):
    from torchshield.train.run import train_from_config

    doc = {**BASE, "data": "sklearn:breast_cancer", "epochs": 1, "augment": {"gaussian_noise": 0.1}}
    result = train_from_config(TrainConfig.from_dict(doc, base=tmp_path), progress=False)
    assert result.metrics["test"]["accuracy"] > 0.6


def test_missing_capability_is_a_clear_error(tmp_path, monkeypatch):
    from torchshield.train.run import train_from_config

    monkeypatch.setitem(sys.modules, "torchshield.robust.training", None)
    doc = {**BASE, "adversarial": {"method": "fast", "eps": 0.1}}
    with pytest.raises(InputError, match="adversarial training is not available in this build"):
        train_from_config(TrainConfig.from_dict(doc, base=tmp_path), progress=False)


def test_watermark_section_embeds_and_records_a_mark(tmp_path):
    from torchshield.train.run import train_from_config

    write_key_file(tmp_path / "master.key")
    doc = {**BASE, "epochs": 1, "watermark": {"method": "whitebox", "bits": 32},
           "output": {"bundle": "wm.tsb", "key_file": "master.key"}}
    train_from_config(TrainConfig.from_dict(doc, base=tmp_path), progress=False)
    record = torchshield.inspect(tmp_path / "wm.tsb").manifest["watermark"]
    assert record["method"] == "whitebox" and "sealed_secret" in record


def test_batchnorm_model_is_fixed_for_dp_and_reported(tmp_path):
    from torchshield.train.run import train_from_config

    doc = {**BASE, "epochs": 1, "model": {"type": "byom_models:bn_mlp"},
           "privacy": {"epsilon": 8.0, "delta": 1e-5, "noise_multiplier": 1.0}}
    result = train_from_config(TrainConfig.from_dict(doc, base=tmp_path), progress=False)
    assert any("BatchNorm1d -> GroupNorm" in m for m in result.messages)
    assert result.privacy["mode"] == "ghost" and result.privacy["model_fixes"]  # GroupNorm: our engine
    assert torch.isfinite(torch.tensor(result.metrics["test"]["loss"]))
