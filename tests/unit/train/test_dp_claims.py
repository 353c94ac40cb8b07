"""A DP claim survives only what is post-processing of the DP model: a command that trains the
weights on data without DP drops it (and says so); a keyed, data-free transform keeps it."""

from __future__ import annotations

import json

import yaml

import torchshield
from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file

BASE = {"model": {"type": "mlp", "hidden": [16]}, "data": "sklearn:digits",
        "optimizer": {"name": "sgd", "lr": 0.5}, "epochs": 1, "batch_size": 256, "seed": 0,
        "output": {"bundle": "dp.tsb"}, "privacy": {"epsilon": 3, "delta": 1e-5}}


def test_watermark_embed_drops_the_dp_claim_and_obfuscate_keeps_it(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(BASE))
    assert run(["train", str(tmp_path / "t.yaml"), "--json"]) == 0
    capsys.readouterr()
    dp = tmp_path / "dp.tsb"
    claim = torchshield.inspect(dp).manifest["privacy"]
    assert claim["epsilon"] <= 3
    key = tmp_path / "master.key"
    write_key_file(key)
    marked = tmp_path / "marked.tsb"
    assert run(["model", "watermark", "embed", str(dp), "--out", str(marked), "--key-file", str(key),
                "--epochs", "3", "--bits", "48", "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "DP claim" in out.err and "dropped" in report["privacy_dropped"]
    manifest = torchshield.inspect(marked).manifest
    assert not manifest.get("privacy")
    assert manifest["provenance"]["dp_claim_dropped"] == {"by": "model watermark embed", "epsilon": claim["epsilon"],
                                                          "delta": claim["delta"]}
    # permuting hidden units with a key uses no data: post-processing, the claim stands
    obf = tmp_path / "obf.tsb"
    assert run(["model", "obfuscate", str(dp), "--out", str(obf), "--key-file", str(key), "--keep-names"]) == 0
    capsys.readouterr()
    assert torchshield.inspect(obf).manifest["privacy"] == claim
