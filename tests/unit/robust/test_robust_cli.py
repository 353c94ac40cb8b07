"""`torchshield robust ...` end to end on a bundle written by `torchshield train` (in-process)."""

from __future__ import annotations

import json

import pytest
from robust_models import one_torch_thread, train_bundle  # noqa: F401 (autouse fixture)

from torchshield.cli.app import run


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return train_bundle(tmp_path_factory.mktemp("robust_cli"), hidden=32, epochs=6)


def _json(capsys, args):
    capsys.readouterr()
    code = run(args)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code in (0, 1) and out.strip() else None), err


def test_eval_reports_and_saves_adversarial_examples(bundle, capsys, tmp_path):
    out = tmp_path / "adv.parquet"
    code, doc, _ = _json(capsys, ["robust", "eval", str(bundle), "--attack", "pgd,fgsm", "--eps", "0.05,0.2",
                                  "--steps", "5", "--limit", "120", "--save-adv", str(out), "--json"])
    assert code == 0 and doc["examples"] == 120 and doc["clean_accuracy"] > 0.85
    rows = {(r["attack"], r["eps"]): r for r in doc["results"]}
    assert set(rows) == {("pgd", 0.05), ("pgd", 0.2), ("fgsm", 0.05), ("fgsm", 0.2)}
    assert rows[("pgd", 0.2)]["robust_accuracy"] < rows[("pgd", 0.05)]["robust_accuracy"] <= doc["clean_accuracy"]
    import pandas as pd

    df = pd.read_parquet(out)
    assert len(df) == 4 * 120 and {"attack", "eps", "label"} <= set(df.columns)
    feats = df.drop(columns=["attack", "eps", "label"]).to_numpy()
    assert feats.shape[1] == 64 and feats.min() >= 0 and feats.max() <= 1
    st = tmp_path / "adv.safetensors"
    assert run(["robust", "eval", str(bundle), "--attack", "fgsm", "--eps", "0.1", "--limit", "10",
                "--save-adv", str(st), "--json"]) == 0
    from safetensors.torch import load_file

    tensors = load_file(st)
    assert tensors["fgsm@0.1"].shape == (10, 1, 8, 8) and tensors["labels"].shape == (10,)


def test_gate_exits_1_and_bad_input_exits_2(bundle, capsys):
    code, doc, _ = _json(capsys, ["robust", "eval", str(bundle), "--attack", "fgsm", "--eps", "0.3",
                                  "--limit", "50", "--min-robust-accuracy", "0.9", "--json"])
    assert code == 1 and doc["results"][0]["robust_accuracy"] < 0.9
    for args, message in [
        (["--eps", "-0.1"], "epsilon must be"),
        (["--eps", "1.5"], "larger than the input range"),
        (["--attack", "nope"], "unknown attack"),
        (["--bounds", "0.2,0.5"], "outside the declared bounds"),
        (["--eps", "abc"], "comma-separated numbers"),
    ]:
        code, _, err = _json(capsys, ["robust", "eval", str(bundle), "--limit", "8", *args])
        assert code == 2, args
        assert message in err and "Traceback" not in err


def test_save_adv_that_cannot_be_written_is_refused_before_the_attacks(bundle, capsys, tmp_path, monkeypatch):
    import torchshield.robust.evaluate as evaluate

    def never(*_a, **_k):
        raise AssertionError("attacked although --save-adv could not be written")

    monkeypatch.setattr(evaluate, "evaluate_robustness", never)
    (tmp_path / "folder.parquet").mkdir()
    for target, message in [(tmp_path / "missing" / "adv.parquet", "--save-adv: output folder"),
                            (tmp_path / "adv.txt", "must end in .parquet or .pq or .safetensors"),
                            (tmp_path / "folder.parquet", "is a directory")]:
        code, _, err = _json(capsys, ["robust", "eval", str(bundle), "--attack", "fgsm", "--limit", "8",
                                      "--save-adv", str(target)])
        assert code == 2 and message in err, err
    import torchshield.robust.defenses as defenses

    monkeypatch.setattr(defenses.FeatureSqueezingDetector, "calibrate", never)
    code, _, err = _json(capsys, ["robust", "calibrate-detector", str(bundle), "--limit", "8",
                                  "--out", str(tmp_path / "missing" / "d.json")])
    assert code == 2 and "--out: output folder" in err, err


def test_labels_outside_training_classes_exit_2(bundle, capsys, tmp_path):
    import pandas as pd

    import torchshield

    names = torchshield.inspect(bundle).manifest["metadata"]["data"]["feature_names"]
    assert len(names) == 64
    df = pd.DataFrame({name: [0.5, 0.2] for name in names})
    df["label"] = [3, 42]
    path = tmp_path / "rows.csv"
    df.to_csv(path, index=False)
    code, _, err = _json(capsys, ["robust", "eval", str(bundle), "--data", str(path), "--eps", "0.1"])
    assert code == 2 and "42" in err


def test_certify_and_detector_commands(bundle, capsys, tmp_path):
    code, doc, _ = _json(capsys, ["robust", "certify", str(bundle), "--sigma", "0.25", "--n0", "20", "--n", "200",
                                  "--limit", "6", "--radii", "0,0.25", "--seed", "0", "--json"])
    assert code == 0 and doc["examples"] == 6
    acc = [r["certified_accuracy"] for r in doc["results"]]
    assert acc[0] >= acc[1] and acc[0] <= doc["smoothed_accuracy"]
    det = tmp_path / "det.json"
    code, doc, _ = _json(capsys, ["robust", "calibrate-detector", str(bundle), "--out", str(det), "--fpr", "0.1",
                                  "--json"])
    assert code == 0 and doc["threshold"] > 0 and json.loads(det.read_text())["target_fpr"] == 0.1
    code, doc, _ = _json(capsys, ["robust", "detect", str(bundle), "--detector", str(det), "--attack", "pgd",
                                  "--eps", "0.1", "--json"])
    assert code == 0 and doc["clean_flagged_rate"] <= 0.2 < doc["adversarial_flagged_rate"]


def test_default_is_the_ensemble_and_masking_is_warned_in_text_and_json(capsys, tmp_path):
    """A user's model that rounds its inputs (gradient masking) through `robust eval`: the default
    ensemble reports Square's much lower figure, and both outputs carry the warning."""
    import torch
    from robust_models import Quantised, digits, trained
    from safetensors.torch import save_file

    from torchshield.model.loading import protect_model

    torch.save(Quantised(trained("mlp"), levels=4).state_dict(), tmp_path / "q.pt")
    protect_model(tmp_path / "q.pt", tmp_path / "q.tsb",
                  architecture={"kind": "factory", "target": "robust_models:quantised_mlp", "kwargs": {"levels": 4}},
                  input_spec={"kind": "image", "shape": [1, 8, 8], "dtype": "float32", "min": 0.0, "max": 1.0})
    _, _, xt, yt = digits()
    save_file({"inputs": xt[:60].contiguous(), "labels": yt[:60].contiguous()}, tmp_path / "d.safetensors")
    args = ["robust", "eval", str(tmp_path / "q.tsb"), "--data", str(tmp_path / "d.safetensors"), "--eps", "0.1",
            "--steps", "10", "--targets", "3", "--queries", "300", "--allow-factory", "robust_models:quantised_mlp"]
    code, doc, err = _json(capsys, [*args, "--attack", "standard,pgd", "--json"])
    assert code == 0, err
    rows = {r["attack"]: r for r in doc["results"]}
    assert rows["pgd"]["robust_accuracy"] >= doc["clean_accuracy"] - 0.05  # fooled by the masking
    assert rows["standard"]["robust_accuracy"] <= rows["pgd"]["robust_accuracy"] - 0.1
    assert rows["standard"]["stages"]["square"] >= 6 and rows["standard"]["access"] == "ensemble"
    assert doc["warnings"] and all("gradient masking" in w for w in doc["warnings"])
    capsys.readouterr()
    assert run(args) == 0  # the default attack is the ensemble
    out = capsys.readouterr().out
    assert "standard" in out and "warning:" in out and "gradient masking" in " ".join(out.split())
    assert "fooled first by apgd-ce" in " ".join(out.split())
