"""A DP bundle's manifest reveals nothing about the private rows beyond the accounted release.

The adversary knows our method, the config and every row but one, and reads the manifest. Two
neighbouring data sets (one row removed; the row is an outlier, the easiest to spot) must give
manifests that differ in nothing but the accounted release: the training-set size released with
the discrete Laplace mechanism. We fix that release to the same value for both runs (as if the
mechanism had drawn it) and require identical manifests, weights aside (DP-SGD's own release)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import torchshield
from torchshield.cli.app import run
from torchshield.train import noise as noise_mod

FEATURES = ["a", "b", "c"]


def _table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=(n, 3))
    df = pd.DataFrame(x, columns=FEATURES)
    df["y"] = (x[:, 0] + x[:, 1] > 10).astype(int)
    from torchshield.nn.datasets import _row_split

    for c in np.linspace(10.0, 9.0, 11):  # the target: an outlier at the declared bounds, in the training split
        df.loc[0, FEATURES] = [10.0, 0.0, c]
        if 0 in _row_split(df[FEATURES].to_numpy()[:1], df["y"].tolist()[:1], 0.2, 0)[0]:
            return df
    raise AssertionError("no outlier lands in the training split")


def _config(bundle: str, **privacy) -> dict:
    return {"model": {"type": "mlp", "hidden": [8]},
            "data": {"path": "data.csv", "label": "y", "bounds": [0, 10], "classes": [0, 1], "test_fraction": 0.2},
            "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 2, "batch_size": 32, "seed": 0,
            "output": {"bundle": bundle}, "privacy": {"epsilon": 2.0, "delta": 1e-4, **privacy}}


def _train(tmp_path, df: pd.DataFrame, bundle: str, capsys, **privacy) -> dict:
    df.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(_config(bundle, **privacy)))
    assert run(["train", str(tmp_path / "t.yaml"), "--json"]) == 0
    capsys.readouterr()
    return torchshield.inspect(tmp_path / bundle).manifest


def _public_part(manifest: dict) -> dict:
    prov = {k: v for k, v in manifest["provenance"].items() if k != "created"}
    return {"metadata": manifest["metadata"], "privacy": manifest["privacy"], "provenance": prov,
            "watermark": manifest.get("watermark")}


def test_neighbouring_datasets_give_identical_manifests_given_the_release(tmp_path, capsys, monkeypatch):
    released = []

    def same_release(value, epsilon, source):  # the mechanism's draw, fixed for both worlds
        released.append((value, epsilon))
        return 250

    monkeypatch.setattr(noise_mod, "discrete_laplace", same_release)
    df = _table()
    with_row = _train(tmp_path, df, "with.tsb", capsys)
    without_row = _train(tmp_path, df.drop(index=0), "without.tsb", capsys)
    assert released[0][0] == released[1][0] + 1  # the target row trained in the first world, not the second
    assert _public_part(with_row) == _public_part(without_row)
    # and it is the accounted release that is recorded, charged to the same epsilon
    rel = with_row["privacy"]["releases"]
    assert rel[0]["value"] == 250 and rel[0]["epsilon"] == pytest.approx(0.02)
    assert with_row["privacy"]["epsilon"] <= 2.0 and with_row["privacy"]["target_epsilon"] == 2.0
    assert with_row["privacy"]["sample_rate"] == pytest.approx(32 / 250)


def test_a_dp_manifest_holds_no_hash_counts_losses_or_row_statistics(tmp_path, capsys):
    df = _table()
    m = _train(tmp_path, df, "m.tsb", capsys, dataset_size=240)
    text = json.dumps(m)
    for leak in ("fingerprint", "sha256", "train_examples", "test_examples", "loss_history", "final_loss",
                 "accuracy", '"examples"'):
        assert leak not in text, leak
    data = m["metadata"]["data"]
    # normalisation and bounds come from the declared [0, 10], not from the rows
    assert data["normalization"]["shift"] == [0.0] * 3 and data["normalization"]["scale"] == [10.0] * 3
    assert data["input_bounds"] == [0.0, 1.0] and data["classes"] == [0, 1]
    assert m["privacy"]["releases"] == [] and m["privacy"]["sample_rate"] == pytest.approx(32 / 240)
    # the owner still sees the metrics, and the split file is theirs alone
    split = tmp_path / "m.tsb.split.json"
    assert (split.stat().st_mode & 0o777) == 0o600 and json.loads(split.read_text())["private"] is True


@pytest.mark.parametrize(("change", "needle"), [
    ({"bounds": None}, "data.bounds"),
    ({"bounds": {"a": [0, 10], "b": [0, 10]}}, "'c'"),
    ({"classes": None}, "data.classes"),
    ({"normalize": "standard"}, "data.normalize"),
])
def test_dp_training_refuses_data_derived_bounds_classes_or_normalisation(tmp_path, capsys, change, needle):
    _table().to_csv(tmp_path / "data.csv", index=False)
    cfg = _config("x.tsb")
    cfg["data"] = {k: v for k, v in {**cfg["data"], **change}.items() if v is not None}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert run(["train", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not (tmp_path / "x.tsb").exists()


def test_rows_keep_their_side_of_the_split_when_another_row_is_removed():
    from torchshield.nn.datasets import _row_split

    df = _table()
    x, y = df[FEATURES].to_numpy(), df["y"].tolist()
    tr, te = _row_split(x, y, 0.2, seed=3)
    tr2, te2 = _row_split(x[1:], y[1:], 0.2, seed=3)
    assert set(tr2 + 1) == set(tr) - {0} and set(te2 + 1) == set(te) - {0}
    assert 30 < len(te) < 90  # about 20% of 300
