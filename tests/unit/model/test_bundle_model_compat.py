"""The manifest grew (v2: architecture, preprocessing, aliases, files, training state); bundles
written before keep loading, and reading a header needs no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchshield.crypto.keys import MasterKey
from torchshield.errors import FormatError, IntegrityError
from torchshield.model.bundle import load, save
from torchshield.model.header import MANIFEST_VERSION, inspect
from torchshield.model.loading import load_model, open_model

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY_KEY = MasterKey(bytes(range(32)))


@pytest.mark.parametrize("name,key", [("legacy_v1_plain.tsb", None), ("legacy_v1_encrypted.tsb", LEGACY_KEY)])
def test_bundles_written_before_manifest_v2_still_load(name, key):
    info = inspect(FIXTURES / name)
    assert "manifest_version" not in info.manifest and info.to_dict()["manifest_version"] == 1
    tensors = load(FIXTURES / name, key=key)
    assert sorted(tensors) == ["1.bias", "1.weight", "3.bias", "3.weight"]
    expected = json.loads((FIXTURES / "legacy_v1_expected.json").read_text())
    model = load_model(FIXTURES / name, key=key)  # architecture derived from the training metadata
    with torch.no_grad():
        out = model(torch.tensor(expected["input"]))
    assert torch.equal(out, torch.tensor(expected["output"]))
    loaded = open_model(FIXTURES / name, key=key)
    assert loaded.preprocessing["input"] == {"kind": "tensor", "shape": [4], "dtype": "float32", "min": 0.0,
                                             "max": 1.0}
    assert loaded.preprocessing["output"]["labels"] == ["a", "b", "c"]


def test_new_bundles_carry_the_manifest_version(tmp_path):
    save({"w": torch.ones(3)}, tmp_path / "b.tsb")
    assert inspect(tmp_path / "b.tsb").manifest["manifest_version"] == MANIFEST_VERSION == 2


def test_edited_aliases_are_caught(tmp_path):
    """Aliases live in the manifest, so they are covered by its digest like every other field."""
    w = torch.randn(4, 4)
    save({"a": w, "b": w}, tmp_path / "t.tsb")
    raw = bytearray((tmp_path / "t.tsb").read_bytes())
    i = raw.find(b'"aliases":{"b":"a"}')
    assert i > 0
    raw[i + len(b'"aliases":{"')] = ord("c")
    (tmp_path / "e.tsb").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="manifest was edited"):
        load(tmp_path / "e.tsb")


def test_alias_pointing_nowhere_is_a_format_error(tmp_path, monkeypatch):
    import torchshield.model.bundle as bundle

    monkeypatch.setattr(bundle, "shared_tensors", lambda tensors: {"ghost": "missing"})
    save({"w": torch.ones(2)}, tmp_path / "g.tsb")
    monkeypatch.undo()
    with pytest.raises(FormatError, match="ghost"):
        load(tmp_path / "g.tsb")


def test_inspect_imports_no_torch(tmp_path):
    shutil.copy(FIXTURES / "legacy_v1_encrypted.tsb", tmp_path / "m.tsb")
    save({"w": torch.ones(2), "v": torch.zeros(3)}, tmp_path / "n.tsb", files={"tokenizer.json": b"{}"},
         architecture={"kind": "registry", "name": "x"}, preprocessing={"input": {"kind": "tokens"}})
    code = ("import sys, json; from torchshield.cli.app import run;"
            f"rc = run(['model', 'inspect', {str(tmp_path / 'n.tsb')!r}, '--json']);"
            f"rc2 = run(['model', 'inspect', {str(tmp_path / 'm.tsb')!r}]);"
            "print('TORCH', 'torch' in sys.modules, rc, rc2)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "TORCH False 0 0"
    doc, _ = json.JSONDecoder().raw_decode(out)
    assert doc["files"] == ["tokenizer.json"] and doc["architecture"] == {"kind": "registry", "name": "x"}
    assert sorted(doc["tensors"]) == ["v", "w"]  # carried files are not listed as tensors
