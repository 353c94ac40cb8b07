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


def _altered_record(folder, tmp_path, **changes):
    doc = json.loads((folder / "mark.json").read_text())
    doc.update(changes)
    path = tmp_path / "altered.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_records_public_fields_are_authenticated(trained, tmp_path, capsys):
    """Audit: the threshold (or bit count) of a record could be edited, so an unrelated model read
    'present' (threshold 0.9) and the owner's read 'absent' (1e-300). Now every field is under the
    record's MAC: an edit is no verdict (exit 2), never a flipped one."""
    folder, key_path, plain, marked = trained
    doc = json.loads((folder / "mark.json").read_text())
    assert doc["version"] == 2 and len(doc["mac"]) == 64
    for suspect, changes in ((plain, {"threshold": 0.9}), (marked, {"threshold": 1e-300}),
                             (marked, {"params": {**doc["params"], "bits": 16}}), (marked, {"mark_id": "0" * 16})):
        code = run(["model", "watermark", "verify", str(suspect), "--record",
                    str(_altered_record(folder, tmp_path, **changes)), "--key-file", str(key_path), "--json"])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and "no verdict" in err, (changes, code, err)
    # a version-1 record (no MAC) in a suspect's own manifest is not trusted; the owner's own file still reads
    v1 = {k: v for k, v in doc.items() if k != "mac"} | {"version": 1}
    stripped = tmp_path / "v1.tsb"
    torchshield.save(torchshield.load(marked), stripped, metadata=torchshield.inspect(marked).manifest["metadata"],
                     watermark=v1)
    assert run(["model", "watermark", "verify", str(stripped), "--key-file", str(key_path)]) == 2
    assert "not authenticated" in capsys.readouterr().err
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    assert run(["model", "watermark", "verify", str(marked), "--record", str(tmp_path / "v1.json"),
                "--key-file", str(key_path)]) == 0


def test_embed_keeps_an_existing_record_and_refuses_non_finite_options(trained, tmp_path, capsys):
    folder, key_path, plain, marked = trained
    record = tmp_path / "mark.json"
    record.write_text("the owner's earlier record")
    base = ["model", "watermark", "embed", str(plain), "--key-file", str(key_path), "--epochs", "1"]
    assert run([*base, "--out", str(tmp_path / "a.tsb"), "--record", str(record)]) == 2
    assert "--force" in capsys.readouterr().err and record.read_text() == "the owner's earlier record"
    for option, value in (("--strength", "nan"), ("--strength", "inf"), ("--strength", "-5"), ("--lr", "inf")):
        assert run([*base, "--out", str(tmp_path / "b.tsb"), option, value]) == 2, (option, value)
        assert option in capsys.readouterr().err and not (tmp_path / "b.tsb").exists()


def test_a_weak_mark_is_said_not_silent(trained, tmp_path, capsys):
    """Audit: embed wrote a mark short of its own robustness target (p 5e-8 against the 1e-9 it aims
    for) with exit 0 and no word. It is still written (it verifies), with a warning and 'weak' in the JSON."""
    from torchshield.crypto.keys import read_key_file
    from torchshield.model.watermark import read_record
    from torchshield.model.watermark.training import shortfall

    folder, key_path, plain, marked = trained
    model, record, key = torchshield.load(plain), read_record(folder / "mark.json"), read_key_file(key_path)
    from torchshield.nn.zoo import build_model

    net = build_model({"type": "mlp", "hidden": [96, 64]}, in_shape=(1, 8, 8), num_classes=10)
    net.load_state_dict(model)
    assert "threshold" in shortfall(net, record, key)  # the unmarked model: nowhere near the target
    out = tmp_path / "weak.tsb"
    assert run(["model", "watermark", "embed", str(plain), "--out", str(out), "--key-file", str(key_path),
                "--epochs", "1", "--bits", "64", "--strength", "1", "--max-accuracy-drop", "1", "--json"]) in (0, 1)
    captured = capsys.readouterr()
    if out.exists():  # it took: weak, or strong enough; either way the JSON says which
        doc = json.loads(captured.out)
        assert "weak" in doc
        assert (doc["weak"] is None) == ("is weak" not in captured.err)


def test_verify_refuses_bad_endpoint_options_and_hides_a_password_in_the_url(trained, capsys):
    folder, key_path, plain, marked = trained
    base = ["model", "watermark", "verify", "--api-key", "k", "--record", str(folder / "mark.json"),
            "--key-file", str(key_path)]
    for extra, named in ((["--max-wait", "nan"], "--max-wait"), (["--timeout", "-1"], "--timeout"),
                         (["--timeout", "nan"], "--timeout"), (["--timeout", "0"], "--timeout"),
                         (["--input-shape", "a,b"], "--input-shape"), (["--input-shape", "0"], "--input-shape"),
                         (["--input-shape", "-1,-64"], "--input-shape")):
        assert run([*base, "--endpoint", "http://127.0.0.1:9", *extra]) == 2, extra
        assert named in capsys.readouterr().err
    from torchshield.errors import InputError
    from torchshield.model.watermark.remote import endpoint_predictor

    with pytest.raises(InputError) as refused:  # nothing listens on port 9
        endpoint_predictor("http://admin:S3cretPw@127.0.0.1:9", "default", "k", timeout=5)(torch.zeros(2, 64))
    assert "cannot reach" in str(refused.value) and "S3cretPw" not in str(refused.value)
    assert "admin:***@127.0.0.1:9" in str(refused.value)


def test_a_source_whose_signature_is_broken_is_not_re_signed(trained, tmp_path, signer, capsys):
    """Audit: one byte of a signature flipped, 'model verify' failed, yet obfuscate --sign wrote a bundle
    that verified: a broken signature laundered into a good one. Now nothing is written."""
    folder, key_path, plain, marked = trained
    signing_key, pub = signer
    signed = tmp_path / "signed.tsb"
    torchshield.save(torchshield.load(plain), signed, metadata=torchshield.inspect(plain).manifest["metadata"],
                     sign_with=signing_key)
    raw = bytearray(signed.read_bytes())
    marker = next(m for m in (b'"signature": "', b'"signature":"') if m in raw)
    at = raw.index(marker) + len(marker)  # the first base64 character of the Ed25519 signature
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
    signed.write_bytes(bytes(raw))
    assert run(["model", "verify", str(signed)]) == 1
    capsys.readouterr()
    for command in (["model", "obfuscate"], ["model", "watermark", "embed"]):
        out = tmp_path / "laundered.tsb"
        code = run([*command, str(signed), "--out", str(out), "--key-file", str(key_path), "--sign", str(signing_key),
                    *(["--bits", "64", "--strength", "4", "--epochs", "6"] if "embed" in command else [])])
        err = capsys.readouterr().err
        assert code == 1 and not out.exists() and "does not verify" in err, (command, code, err)


def test_a_trigger_record_for_another_input_shape_is_no_verdict(trained, tmp_path, capsys):
    """Audit: a trigger record made for a 3 x 8 x 8 model, checked against this 64-input MLP, crashed
    (exit 70); it is a record for another model (exit 2)."""
    from torchshield.crypto.keys import read_key_file
    from torchshield.model.watermark import make_regularizer, write_record
    from torchshield.model.watermark.inputs import TriggerInputs

    folder, key_path, plain, marked = trained
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    _, record = make_regularizer({"method": "trigger", "design": "noise", "num_classes": 10}, other,
                                 read_key_file(key_path), inputs=TriggerInputs((3, 8, 8), 0.0, 1.0))
    write_record(tmp_path / "other.json", record)
    code = run(["model", "watermark", "verify", str(plain), "--record", str(tmp_path / "other.json"),
                "--key-file", str(key_path)])
    err = capsys.readouterr().err
    assert code == 2 and "record for another model" in err, err


def test_a_malformed_version_1_record_is_no_verdict(trained, tmp_path, capsys):
    """A version-1 record (no MAC) with a class count of 0 crashed the verifier (exit 70)."""
    from torchshield.crypto.keys import read_key_file
    from torchshield.model.watermark import make_regularizer
    from torchshield.model.watermark.inputs import TriggerInputs

    folder, key_path, plain, marked = trained
    _, record = make_regularizer({"method": "trigger", "design": "noise", "num_classes": 10},
                                 torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
                                 read_key_file(key_path), inputs=TriggerInputs((1, 8, 8), 0.0, 1.0))
    doc = {k: v for k, v in record.to_dict().items() if k != "mac"} | {"version": 1}
    doc["params"] = {**doc["params"], "num_classes": 0}
    (tmp_path / "v1.json").write_text(json.dumps(doc))
    code = run(["model", "watermark", "verify", str(plain), "--record", str(tmp_path / "v1.json"),
                "--key-file", str(key_path)])
    assert code == 2 and "malformed field" in capsys.readouterr().err
