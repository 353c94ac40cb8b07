"""Real Flower simulations (Ray backend), kept to two runs: plain FedAvg through the CLI, and
SecAgg+ + client-level DP + FedProx with a client dropping out in round 2."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

import torchshield
from torchshield.cli.app import run
from torchshield.crypto.signing import generate_signing_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_cli_simulate_fedavg_writes_signed_bundle_and_metrics(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    key, pub = generate_signing_key(tmp_path / "signer")
    cfg = {"clients": 3, "rounds": 2, "dataset": "digits", "local": {"epochs": 2},
           "output": {"dir": str(tmp_path / "out")}, "backend": {"num_cpus": 1}}
    (tmp_path / "fl.yaml").write_text(yaml.safe_dump(cfg))
    assert run(["fl", "simulate", str(tmp_path / "fl.yaml"), "--sign", key.name, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    assert doc["final_accuracy"] > 0.8  # reference: 0.79 -> 0.86 after rounds 1-2 with 10 clients
    assert doc["rounds"][1]["test_accuracy"] >= doc["rounds"][0]["test_accuracy"] - 0.02
    assert [c["partition_id"] for c in doc["rounds"][0]["clients"]] == [0, 1, 2]
    assert doc["privacy"] is None and doc["secure_aggregation"] is False
    tensors = torchshield.load(doc["outputs"]["model"], verify_with=pub)  # signature verifies
    info = torchshield.inspect(doc["outputs"]["model"])
    assert info.manifest["provenance"]["strategy"] == "fedavg"
    assert info.manifest["provenance"]["shard_sizes"] == [480, 479, 479]
    assert sum(t.numel() for t in tensors.values()) == 64 * 64 + 64 + 64 * 10 + 10
    rows = list(csv.DictReader(open(doc["outputs"]["metrics_csv"])))
    assert len(rows) == 6 and {r["partition_id"] for r in rows} == {"0", "1", "2"}


def test_secagg_dp_fedprox_survives_a_dropout_and_records_epsilon(tmp_path) -> None:
    from torchshield.federated.config import parse_config
    from torchshield.federated.simulate import simulate

    cfg = parse_config({
        "clients": 3, "rounds": 2, "strategy": {"name": "fedprox", "proximal_mu": 0.01},
        "partition": {"kind": "dirichlet", "alpha": 1.0}, "local": {"epochs": 2},
        "secure_aggregation": {"num_shares": 3, "reconstruction_threshold": 2},
        "privacy": {"clip": 2.0, "noise_multiplier": 0.05}, "dropout": {"clients": 1, "from_round": 2},
        "output": {"dir": str(tmp_path / "out")}, "backend": {"num_cpus": 1}})
    seen: list[int] = []
    result = simulate(cfg, on_round=lambda row: seen.append(row["round"]))
    assert seen == [1, 2]
    # round 2: client 0 dropped after the key exchange; SecAgg+ reconstructed its masks from 2 shares
    assert result.rounds[1]["clients_aggregated"] == 2
    # under client-level DP the metrics say nothing per client: no losses, sizes or participants
    with open(result.outputs["metrics_json"]) as fh:
        metrics_text = fh.read()
    assert all(word not in metrics_text for word in ('"partition_id"', '"loss"', '"examples"'))
    assert result.final_accuracy > 0.3  # chance is 0.1
    p = torchshield.inspect(result.outputs["model"]).manifest["privacy"]
    assert p["rounds"] == 2 and p["noise_multiplier"] == 0.05 and p["clipping_norm"] == 2.0
    assert p["epsilon"] > 0 and p == json.loads(metrics_text)["privacy"]
    assert p["neighbouring"] == "replace-one client" and "without replacement" in p["sampling"]
    assert "AES-256-CTR" in p["noise"]["generator"]
    prov = torchshield.inspect(result.outputs["model"]).manifest["provenance"]
    assert prov["secure_aggregation"] == {"protocol": "SecAgg+", "num_shares": 3, "reconstruction_threshold": 2}
    assert "shard_sizes" not in prov and "fingerprint" not in json.dumps(prov)
