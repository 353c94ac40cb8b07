"""The keys/model CLI end to end: exit codes 0/1/2, one-line errors, --json documents."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from torchshield.cli.app import run


def _run(capsys, *argv):
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith("torchshield ")
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "keys" in out and "model" in out


def test_unknown_option_is_usage_error(capsys):
    code, _, err = _run(capsys, "keys", "init", "--bogus")
    assert code == 2 and "No such option" in err


def test_keys_init_and_refuse_overwrite(tmp_path, capsys):
    k = tmp_path / "shield.key"
    code, out, _ = _run(capsys, "keys", "init", "--out", str(k), "--json")
    assert code == 0 and stat.S_IMODE(k.stat().st_mode) == 0o600
    doc = json.loads(out)
    assert len(doc["key_id"]) == 16 and k.read_text().strip() not in out
    code, _, err = _run(capsys, "keys", "init", "--out", str(k))
    assert code == 2 and "already exists" in err and "Traceback" not in err


def test_protect_verify_inspect_export_rotate(tmp_path, capsys):
    torch.save({"w": torch.randn(64, 64), "b": torch.zeros(8)}, tmp_path / "model.pt")
    k, k2 = tmp_path / "a.key", tmp_path / "b.key"
    assert _run(capsys, "keys", "init", "--out", str(k))[0] == 0
    assert _run(capsys, "keys", "init", "--out", str(k2))[0] == 0
    assert _run(capsys, "keys", "signing-init", "--out", str(tmp_path / "signer"))[0] == 0
    tsb = tmp_path / "model.tsb"
    code, out, err = _run(capsys, "model", "protect", str(tmp_path / "model.pt"), "--out", str(tsb), "--encrypt",
                          "--key-file", str(k), "--sign", str(tmp_path / "signer.key"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["encrypted"] and doc["signed"] and doc["tensor_count"] == 2

    code, out, _ = _run(capsys, "model", "verify", str(tsb), "--pubkey", str(tmp_path / "signer.pub"), "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = _run(capsys, "model", "inspect", str(tsb), "--json")
    assert code == 0 and json.loads(out)["tensors"]["w"]["shape"] == [64, 64]

    code, out, _ = _run(capsys, "keys", "rotate", "--old", str(k), "--new", str(k2), str(tsb), "--json")
    assert code == 0 and json.loads(out)["files"][0]["status"] == "rotated"
    code, _, err = _run(capsys, "model", "export", str(tsb), "--out", str(tmp_path / "x.safetensors"),
                        "--key-file", str(k))
    assert code == 2 and "key id" in err and not (tmp_path / "x.safetensors").exists()
    code, _, _ = _run(capsys, "model", "export", str(tsb), "--out", str(tmp_path / "x.safetensors"),
                      "--key-file", str(k2))
    from safetensors.torch import load_file

    assert code == 0 and torch.equal(load_file(str(tmp_path / "x.safetensors"))["b"], torch.zeros(8))

    blob = bytearray(tsb.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "bad.tsb").write_bytes(blob)
    code, out, _ = _run(capsys, "model", "verify", str(tmp_path / "bad.tsb"), "--json")
    assert code == 1 and not json.loads(out)["ok"]
    other = tmp_path / "other"
    _run(capsys, "keys", "signing-init", "--out", str(other))
    code, _, _ = _run(capsys, "model", "verify", str(tsb), "--pubkey", str(tmp_path / "other.pub"))
    assert code == 1


@pytest.mark.parametrize("content", [b"", b"garbage bytes"])
def test_non_bundle_inputs_exit_2(tmp_path, capsys, content):
    p = tmp_path / "x.tsb"
    p.write_bytes(content)
    code, _, err = _run(capsys, "model", "inspect", str(p))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:")
    code, _, err = _run(capsys, "model", "inspect", str(tmp_path))
    assert code == 2 and "directory" in err


def test_protect_refuses_a_pickle_that_needs_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"w": torch.ones(2), "x": Evil()}, tmp_path / "evil.pt")
    code, _, err = _run(capsys, "model", "protect", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "o.tsb"))
    assert code in (1, 2) and not (tmp_path / "o.tsb").exists() and "Traceback" not in err


def test_script_entry_point_exit_codes(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "torchshield")
    r = subprocess.run([exe, "model", "inspect", str(tmp_path / "missing.tsb")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
