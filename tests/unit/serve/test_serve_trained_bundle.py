"""A bundle written by `torchshield train` can be served as it is (its metadata layout is the
training one: model spec, input shape and bounds nested under model/data)."""

import torch
import yaml

from torchshield.cli.app import run
from torchshield.crypto.keys import read_key_file, write_key_file
from torchshield.serve.models import TrustPolicy, load_bundle_model


def test_trained_encrypted_bundle_is_servable(tmp_path, capsys):
    write_key_file(tmp_path / "k.key")
    cfg = {"model": {"type": "mlp", "hidden": [16]}, "data": "sklearn:digits",
           "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 2, "batch_size": 128, "seed": 0,
           "output": {"bundle": "m.tsb", "key_file": "k.key"}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert run(["train", str(tmp_path / "t.yaml"), "--json"]) == 0, capsys.readouterr().err
    served = load_bundle_model(tmp_path / "m.tsb", master=read_key_file(tmp_path / "k.key"),
                               trust=TrustPolicy(allow_unsigned=True))  # `train` does not sign
    assert served.num_classes == 10 and served.spec.to_dict()["shape"] == [1, 8, 8]
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    inputs = torch.tensor(x[:200] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    with torch.no_grad():
        acc = (served.module(inputs).argmax(1).numpy() == y[:200]).mean()
    assert acc > 0.6
