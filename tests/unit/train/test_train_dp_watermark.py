"""DP training and a watermark in one config (a regression: the watermark regulariser returns a
constant on the steps it skips, and the private step differentiated it unconditionally)."""

import yaml

from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file
from torchshield.model.bundle import inspect


def test_dp_training_with_whitebox_watermark(tmp_path, capsys):
    write_key_file(tmp_path / "k.key")
    cfg = {"model": {"type": "mlp", "hidden": [32]}, "data": "sklearn:digits",
           "optimizer": {"name": "sgd", "lr": 0.5}, "epochs": 1, "batch_size": 128, "seed": 0,
           "output": {"bundle": "m.tsb", "key_file": "k.key"},
           "privacy": {"epsilon": 3, "delta": 1e-5, "max_grad_norm": 1.0},
           "watermark": {"method": "whitebox", "bits": 32}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert run(["train", str(tmp_path / "t.yaml"), "--json"]) == 0, capsys.readouterr().err
    m = inspect(tmp_path / "m.tsb").manifest
    assert m["privacy"]["epsilon"] <= 3.0 and m["watermark"]["method"] == "whitebox"
