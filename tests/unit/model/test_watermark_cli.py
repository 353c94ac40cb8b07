"""CLI: model watermark embed/verify (exit 0 present, 1 absent, 2 bad input), obfuscate/deobfuscate."""

from __future__ import annotations

import json

import pytest
import torch

import torchshield
from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP trains several times faster on one thread; restored below
    try:
        yield _trained(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _trained(tmp_path_factory):
    from torchshield.nn.datasets import load_dataset
    from torchshield.nn.loop import fit
    from torchshield.nn.zoo import build_model

    folder = tmp_path_factory.mktemp("wmcli")
    key_path = folder / "owner.key"
    write_key_file(key_path)
    data = load_dataset("sklearn:digits")
    spec = {"type": "mlp", "hidden": [96, 64]}
    torch.manual_seed(0)
    model = build_model(spec, in_shape=data.input_shape, num_classes=10)
    fit(model, data.train.loader(64, shuffle=True, seed=0), epochs=6,
        optimizer=torch.optim.Adam(model.parameters(), lr=2e-3), progress=False)
    meta = {"config": {"data": "sklearn:digits"}, "data": data.describe(),
            "model": {"spec": spec, "input_shape": list(data.input_shape), "num_classes": 10}}
    plain = torchshield.save(model, folder / "plain.tsb", metadata=meta)
    marked = folder / "marked.tsb"
    code = run(["model", "watermark", "embed", str(plain), "--out", str(marked), "--key-file", str(key_path),
                "--record", str(folder / "mark.json"), "--epochs", "6", "--bits", "64", "--strength", "4", "--json"])
    assert code == 0
    return folder, key_path, plain, marked


def test_embed_then_verify_present_and_absent(trained, capsys):
    folder, key_path, plain, marked = trained
    capsys.readouterr()
    assert run(["model", "watermark", "verify", str(marked), "--key-file", str(key_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["present"] and doc["p_value"] < 1e-6 and doc["method"] == "whitebox"
    manifest = torchshield.inspect(marked).manifest
    assert manifest["watermark"]["mark_id"] == doc["mark_id"]
    # the unmarked original, checked against the owner's record: absent, exit 1
    assert run(["model", "watermark", "verify", str(plain), "--record", str(folder / "mark.json"),
                "--key-file", str(key_path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["present"] is False and "not evidence that the model is independent" in doc["note"]
    assert run(["model", "watermark", "verify", str(plain), "--record", str(folder / "mark.json"),
                "--key-file", str(key_path)]) == 1
    out, err = capsys.readouterr()
    assert "absent" in out and "not evidence that the model is independent" in err  # said, not only in docs


def test_bad_inputs_exit_2(trained, tmp_path, capsys):
    folder, key_path, plain, marked = trained
    other_key = tmp_path / "other.key"
    write_key_file(other_key)
    assert run(["model", "watermark", "verify", str(marked), "--key-file", str(other_key)]) == 2
    assert "key id" in capsys.readouterr().err
    assert run(["model", "watermark", "verify", str(plain), "--key-file", str(key_path)]) == 2
    assert "no watermark record" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[]")
    assert run(["model", "watermark", "verify", str(marked), "--record", str(tmp_path / "bad.json"),
                "--key-file", str(key_path)]) == 2
    assert run(["model", "watermark", "verify", "--endpoint", "http://127.0.0.1:9", "--api-key", "k",
                "--record", str(folder / "mark.json"), "--key-file", str(key_path)]) == 2


def test_obfuscate_and_deobfuscate_round_trip(trained, tmp_path, capsys):
    _, key_path, _, marked = trained
    obf, back = tmp_path / "obf.tsb", tmp_path / "back.tsb"
    capsys.readouterr()
    assert run(["model", "obfuscate", str(marked), "--out", str(obf), "--key-file", str(key_path), "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)["changed"]
    assert changed["units_moved"] > 0 and changed["tensors_changed"] > 0 and changed["names_scrambled"] > 0
    original, scrambled = torchshield.load(marked), torchshield.load(obf)
    assert set(original).isdisjoint(scrambled)
    assert "perm" not in json.dumps(torchshield.inspect(obf).manifest)
    # the white-box mark is read through obfuscation: names scrambled (searched, Bonferroni-corrected),
    # units permuted and rescaled (the carrier is invariant to both)
    capsys.readouterr()
    assert run(["model", "watermark", "verify", str(obf), "--key-file", str(key_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["present"] is True
    assert run(["model", "deobfuscate", str(obf), "--out", str(back), "--key-file", str(key_path)]) == 0
    restored = torchshield.load(back)
    assert set(restored) == set(original)
    assert all(torch.equal(restored[k], original[k]) for k in original)
    assert run(["model", "watermark", "verify", str(back), "--key-file", str(key_path)]) == 0
    assert run(["model", "deobfuscate", str(marked), "--out", str(tmp_path / "x.tsb"),
                "--key-file", str(key_path)]) == 2


def test_embed_refuses_to_write_a_model_it_damaged_and_signs_what_it_writes(trained, tmp_path, signer, capsys):
    """--max-accuracy-drop guards the output (exit 1, nothing written); --sign signs it; a signed source
    written unsigned is said out loud (a server with --trust would refuse it)."""
    folder, key_path, plain, marked = trained
    ruined = tmp_path / "ruined.tsb"
    code = run(["model", "watermark", "embed", str(plain), "--out", str(ruined), "--key-file", str(key_path),
                "--epochs", "2", "--bits", "64", "--strength", "4", "--lr", "0.3", "--max-accuracy-drop", "0.02"])
    err = capsys.readouterr().err
    assert code == 1 and not ruined.exists() and "max-accuracy-drop" in err
    signing_key, pub = signer
    signed = tmp_path / "signed.tsb"
    assert run(["model", "watermark", "embed", str(plain), "--out", str(signed), "--key-file", str(key_path),
                "--epochs", "6", "--bits", "64", "--strength", "4", "--sign", str(signing_key)]) == 0
    assert torchshield.inspect(signed).signed
    assert run(["model", "verify", str(signed), "--pubkey", str(pub)]) == 0
    capsys.readouterr()
    assert run(["model", "obfuscate", str(signed), "--out", str(tmp_path / "o.tsb"), "--key-file",
                str(key_path), "--keep-names"]) == 0
    assert "is not signed, although its source was" in capsys.readouterr().err
    assert not torchshield.inspect(tmp_path / "o.tsb").signed
    assert run(["model", "obfuscate", str(signed), "--out", str(tmp_path / "o2.tsb"), "--key-file",
                str(key_path), "--sign", str(signing_key)]) == 0
    assert run(["model", "verify", str(tmp_path / "o2.tsb"), "--pubkey", str(pub)]) == 0


def test_embed_fine_tunes_with_the_optimizer_named_and_triggers_from_the_input_spec(trained, tmp_path, monkeypatch,
                                                                                   capsys):
    """--optimizer sgd really trains with SGD (the optimiser handed to the loop is recorded), and the
    trigger inputs take the bundle's input spec: digits are [1, 8, 8] in [0, 1]."""
    from torchshield.nn import loop

    _, key_path, plain, _ = trained
    seen = []
    real_fit = loop.fit

    def spy(model, loader, **kwargs):
        seen.append(kwargs["optimizer"])
        return real_fit(model, loader, **kwargs)

    monkeypatch.setattr(loop, "fit", spy)
    out = tmp_path / "sgd.tsb"
    capsys.readouterr()
    assert run(["model", "watermark", "embed", str(plain), "--out", str(out), "--key-file", str(key_path),
                "--method", "trigger", "--optimizer", "sgd", "--lr", "0.05", "--epochs", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert seen and all(type(o) is torch.optim.SGD for o in seen)
    assert seen[0].defaults["lr"] == 0.05 and seen[0].defaults["momentum"] == 0.9
    assert report["optimizer"] == "sgd" and report["trigger_inputs"]["input_shape"] == [1, 8, 8]
    params = torchshield.inspect(out).manifest["watermark"]["params"]
    assert params["input_shape"] == [1, 8, 8] and (params["low"], params["high"]) == (0.0, 1.0)
    assert run(["model", "watermark", "verify", str(out), "--key-file", str(key_path)]) == 0
