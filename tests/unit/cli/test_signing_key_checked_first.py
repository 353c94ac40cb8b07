"""Every command that writes a bundle refuses a signing key that does not load, or an output it cannot
write, *before* it does the work (exit 2, the file named), instead of training, fine-tuning or
federating to the end and failing at the save. Each command's work function is replaced by one that
fails the test if called."""

from __future__ import annotations

import importlib

import pytest
import torch
import yaml

import torchshield
from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file


def _never(*_args, **_kwargs):
    raise AssertionError("the work ran although the signing key could not be loaded")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_key_file(tmp_path / "owner.key")
    (tmp_path / "bad.key").write_text("not a PEM key\n")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    meta = {"config": {"data": "sklearn:digits"},
            "model": {"spec": {"type": "mlp", "hidden": [16]}, "input_shape": [64], "num_classes": 10}}
    torchshield.save(model, tmp_path / "plain.tsb", metadata=meta)
    return tmp_path


BAD_KEYS = {"malformed": "bad.key", "missing": "absent.key"}
COMMANDS = {
    "train": ("torchshield.train.run", "fit"),
    "fl simulate": ("torchshield.federated.simulate", "simulate"),
    "fl deploy": ("torchshield.federated.deploy", "LocalDeployment"),
    "model watermark embed": ("torchshield.model.watermark", "embed"),
    "model obfuscate": ("torchshield.model.obfuscate", "obfuscate_model"),
    "model deobfuscate": ("torchshield.model.obfuscate", "deobfuscate"),
    "model protect": ("torchshield.model.loading", "protect_model"),
}


def _argv(command: str, key: str, folder) -> list[str]:
    if command == "train":
        (folder / "t.yaml").write_text(yaml.safe_dump({
            "model": {"type": "mlp", "hidden": [8]}, "data": "sklearn:digits", "epochs": 1,
            "output": {"bundle": "out.tsb", "signing_key": key}}))
        return ["train", "t.yaml"]
    if command.startswith("fl "):
        (folder / "fl.yaml").write_text(yaml.safe_dump({"clients": 2, "rounds": 1, "dataset": "digits"}))
        return ["fl", command[3:], "fl.yaml", "--sign", key, *(["--insecure"] if command == "fl deploy" else [])]
    common = ["--out", "out.tsb", "--sign", key]
    if command == "model protect":
        return ["model", "protect", "plain.tsb", *common]
    keyed = [*common, "--key-file", "owner.key"]
    if command == "model watermark embed":
        return ["model", "watermark", "embed", "plain.tsb", "--data", "sklearn:digits", *keyed]
    return [*command.split(), "plain.tsb", *keyed]


@pytest.mark.parametrize("bad", sorted(BAD_KEYS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_signing_key_is_refused_before_any_work(command, bad, folder, monkeypatch, capsys):
    module, name = COMMANDS[command]
    monkeypatch.setattr(importlib.import_module(module), name, _never)  # (a package may shadow its module)
    code = run(_argv(command, BAD_KEYS[bad], folder))
    err = capsys.readouterr().err
    assert code == 2, err
    assert BAD_KEYS[bad] in err and "signing key" in err and "Traceback" not in err
    assert not (folder / "out.tsb").exists()


@pytest.mark.parametrize("command", ["model watermark embed", "model obfuscate", "model deobfuscate",
                                     "model protect"])
def test_an_output_in_a_missing_folder_is_refused_before_any_work(command, folder, monkeypatch, capsys):
    module, name = COMMANDS[command]
    monkeypatch.setattr(importlib.import_module(module), name, _never)
    argv = [a if a != "out.tsb" else "no-such-folder/out.tsb" for a in _argv(command, "bad.key", folder)]
    argv = argv[:argv.index("--sign")] + argv[argv.index("--sign") + 2:]  # the folder alone is at fault
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 2 and "output folder no-such-folder does not exist" in err, err


def test_embed_refuses_a_record_it_could_not_write_before_writing_the_bundle(folder, monkeypatch, capsys):
    """--record is written after the bundle: a folder missing there left a marked bundle without its
    record (and a rerun refused, the bundle existing)."""
    monkeypatch.setattr(importlib.import_module("torchshield.model.watermark"), "embed", _never)
    argv = [*_argv("model watermark embed", "bad.key", folder), "--record", "no-such-folder/mark.json"]
    argv = argv[:argv.index("--sign")] + argv[argv.index("--sign") + 2:]
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 2 and "--record: output folder no-such-folder does not exist" in err, err
    assert not (folder / "out.tsb").exists()
