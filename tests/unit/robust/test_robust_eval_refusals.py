"""`torchshield robust ...` refuses, before any attack or write, the option values that would make
a check or a loop do nothing (an empty attack list, a NaN gate, a zero batch) or that it cannot
honour: exit 2, one line naming the option, nothing written."""

from __future__ import annotations

import json
import re

import pytest
from robust_models import one_torch_thread, train_bundle  # noqa: F401 (autouse fixture)

from torchshield.cli.app import run

FACTORY = "robust_models:quantised_mlp"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return train_bundle(tmp_path_factory.mktemp("robust_refusals"), hidden=16, epochs=1)


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """A `model protect` bundle (factory architecture, recorded pixel range) and a tensor file for it."""
    import torch
    from robust_models import digits, quantised_mlp
    from safetensors.torch import save_file

    from torchshield.model.loading import protect_model

    root = tmp_path_factory.mktemp("robust_refusals_byom")
    torch.manual_seed(0)
    torch.save(quantised_mlp().state_dict(), root / "q.pt")
    protect_model(root / "q.pt", root / "q.tsb", architecture={"kind": "factory", "target": FACTORY, "kwargs": {}},
                  input_spec={"kind": "image", "shape": [1, 8, 8], "dtype": "float32", "min": 0.0, "max": 1.0})
    _, _, xt, yt = digits()
    save_file({"inputs": xt[:8].contiguous(), "labels": yt[:8].contiguous()}, root / "d.safetensors")
    return root


@pytest.fixture
def no_work(monkeypatch):
    """Any attack, certificate or calibration reached is a test failure (the refusal comes first)."""
    import torchshield.robust.defenses as defenses
    import torchshield.robust.evaluate as evaluate
    import torchshield.robust.smoothing as smoothing

    def never(*_a, **_k):
        raise AssertionError("the command worked although its options were bad")

    monkeypatch.setattr(evaluate, "evaluate_robustness", never)
    monkeypatch.setattr(smoothing.SmoothedClassifier, "certify", never)
    monkeypatch.setattr(defenses.FeatureSqueezingDetector, "calibrate", never)


def _refused(capsys, argv, option):
    """Run; expect exit 2, no stdout, no traceback and exactly one error line, which names ``option``."""
    capsys.readouterr()
    code = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.lower().startswith("error:")]
    assert len(lines) == 1, err
    assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", lines[0]), lines[0]
    return lines[0]


def _eval(bundle, tmp_path, *args):
    return ["robust", "eval", bundle, "--limit", "8", "--save-adv", tmp_path / "adv.parquet", *args]


# --- F3: an attack list that is empty after parsing; a gate that cannot fail --------------------------------------

@pytest.mark.parametrize("attack", [",", " ", " , ,"])
def test_empty_attack_list_is_refused_naming_the_valid_attacks(bundle, tmp_path, capsys, no_work, attack):
    line = _refused(capsys, _eval(bundle, tmp_path, "--attack", attack, "--min-robust-accuracy", "0.99"), "--attack")
    assert "pgd" in line and "standard" in line and "fgsm" in line
    assert not (tmp_path / "adv.parquet").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.1", "1.5"])
def test_min_robust_accuracy_must_be_a_finite_number_in_0_1(bundle, tmp_path, capsys, no_work, value):
    _refused(capsys, _eval(bundle, tmp_path, "--attack", "fgsm", "--min-robust-accuracy", value),
             "--min-robust-accuracy")
    assert not (tmp_path / "adv.parquet").exists()


# --- F11: a batch size or count that is zero or negative --------------------------------------------------------

@pytest.mark.parametrize(("option", "value"), [("--batch-size", "0"), ("--batch-size", "-1"), ("--steps", "0"),
                                               ("--steps", "-3"), ("--restarts", "0"), ("--queries", "0"),
                                               ("--targets", "0")])
def test_counts_must_be_at_least_one(bundle, tmp_path, capsys, no_work, option, value):
    _refused(capsys, _eval(bundle, tmp_path, "--attack", "fgsm", option, value), option)
    assert not (tmp_path / "adv.parquet").exists()


def test_the_library_refuses_a_batch_size_below_one():
    import torch
    from robust_models import make_mlp

    from torchshield.errors import InputError
    from torchshield.robust.evaluate import evaluate_robustness
    from torchshield.robust.smoothing import SmoothedClassifier

    model = make_mlp().eval()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for bad in (0, -1):
        with pytest.raises(InputError, match="batch_size"):
            evaluate_robustness(model, x, y, attacks=["fgsm"], eps=[0.1], batch_size=bad)
        with pytest.raises(InputError, match="batch_size"):  # 0 looped for ever drawing no noise
            SmoothedClassifier(model, num_classes=10, sigma=0.25, batch_size=bad)


# --- F13: --bounds, --data, --save-adv ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "0,1,2", "1,0", "0.5,0.5", "nan,1", "0,inf", "a,b"])
def test_bad_bounds_say_what_bounds_needs(bundle, protected, tmp_path, capsys, no_work, value):
    for argv in (_eval(bundle, tmp_path, "--attack", "fgsm", "--bounds", value),
                 _eval(protected / "q.tsb", tmp_path, "--attack", "fgsm", "--bounds", value, "--data",
                       protected / "d.safetensors", "--allow-factory", FACTORY)):
        line = _refused(capsys, argv, "--bounds")
        assert "LOW,HIGH" in line and "LOW < HIGH" in line and "does not record" not in line, line
        assert not (tmp_path / "adv.parquet").exists()


def test_calibrate_detector_bounds_are_checked_the_same_way(bundle, tmp_path, capsys, no_work):
    line = _refused(capsys, ["robust", "calibrate-detector", bundle, "--out", tmp_path / "d.json", "--bounds", "1,0"],
                    "--bounds")
    assert "LOW < HIGH" in line and not (tmp_path / "d.json").exists()


def test_tensor_data_for_a_train_bundle_names_what_eval_accepts(bundle, protected, tmp_path, capsys, no_work):
    line = _refused(capsys, _eval(bundle, tmp_path, "--attack", "fgsm", "--data", protected / "d.safetensors"),
                    "--data")
    assert "--format" not in line and ".csv" in line and "sklearn:digits" in line, line
    assert not (tmp_path / "adv.parquet").exists()


def test_data_help_names_the_tensor_file_a_protected_bundle_needs():
    import click
    import typer

    from torchshield.cli.app import build_app

    group = typer.main.get_command(build_app())
    assert isinstance(group, click.Group)
    robust = group.commands["robust"]
    assert isinstance(robust, click.Group)
    for name in ("eval", "certify", "calibrate-detector", "detect"):
        (data,) = [p for p in robust.commands[name].params if "--data" in getattr(p, "opts", [])]
        text = " ".join((getattr(data, "help", "") or "").split())
        assert ".safetensors" in text and "model protect" in text and ".csv" in text, (name, text)


def test_save_adv_does_not_overwrite_without_force(bundle, tmp_path, capsys, monkeypatch):
    import torchshield.robust.evaluate as evaluate

    target = tmp_path / "adv.parquet"
    target.write_bytes(b"keep me")
    with monkeypatch.context() as m:
        m.setattr(evaluate, "evaluate_robustness", lambda *_a, **_k: pytest.fail("attacked before the refusal"))
        line = _refused(capsys, ["robust", "eval", bundle, "--attack", "fgsm", "--limit", "8", "--save-adv", target],
                        "--save-adv")
    assert "--force" in line and target.read_bytes() == b"keep me"
    capsys.readouterr()
    assert run(["robust", "eval", str(bundle), "--attack", "fgsm", "--eps", "0.1", "--limit", "8",
                "--save-adv", str(target), "--force", "--json"]) == 0
    import pandas as pd

    assert len(pd.read_parquet(target)) == 8


# --- the same class of bug in the other robust subcommands ------------------------------------------------------

@pytest.mark.parametrize(("option", "value"), [("--sigma", "nan"), ("--sigma", "inf"), ("--sigma", "0"),
                                               ("--alpha", "nan"), ("--alpha", "0"), ("--alpha", "1"),
                                               ("--n", "0"), ("--n0", "0"), ("--batch-size", "0"),
                                               ("--radii", "nan"), ("--radii", "0,-0.5"), ("--radii", "0,inf")])
def test_certify_refuses_values_that_disable_it(bundle, capsys, no_work, option, value):
    argv = ["robust", "certify", bundle, "--limit", "2", "--n0", "5", "--n", "10", "--seed", "0", option, value]
    _refused(capsys, argv, option)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "1", "-0.1"])
def test_calibrate_detector_refuses_a_false_positive_rate_outside_0_1(bundle, tmp_path, capsys, no_work, value):
    _refused(capsys, ["robust", "calibrate-detector", bundle, "--out", tmp_path / "d.json", "--fpr", value], "--fpr")
    assert not (tmp_path / "d.json").exists()


def _detector(tmp_path, threshold=1.0):
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"kind": "feature-squeezing", "version": 1, "threshold": threshold,
                                "squeezers": ["bits:4"], "bounds": [0, 1]}))
    return path


@pytest.mark.parametrize(("option", "value"), [("--attack", ""), ("--attack", " "), ("--eps", "nan"),
                                               ("--eps", "-0.1"), ("--eps", "inf")])
def test_detect_refuses_an_empty_attack_or_a_bad_eps(bundle, tmp_path, capsys, no_work, option, value):
    argv = ["robust", "detect", bundle, "--detector", _detector(tmp_path), "--limit", "8", option, value]
    if option == "--eps":
        argv += ["--attack", "fgsm"]
    _refused(capsys, argv, option)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -1.0])
def test_detect_refuses_a_detector_file_whose_threshold_flags_nothing_or_everything(bundle, tmp_path, capsys,
                                                                                    threshold):
    line = _refused(capsys, ["robust", "detect", bundle, "--detector", _detector(tmp_path, threshold),
                             "--limit", "8"], "--detector")
    assert "threshold" in line


def test_calibrate_detector_does_not_overwrite_without_force(bundle, tmp_path, capsys):
    target = tmp_path / "detector.json"
    target.write_text("the detector in use")
    line = _refused(capsys, ["robust", "calibrate-detector", bundle, "--limit", "16", "--out", target], "--out")
    assert "--force" in line and target.read_text() == "the detector in use"
    assert run(["robust", "calibrate-detector", str(bundle), "--limit", "40", "--out", str(target), "--force",
                "--json"]) == 0
    assert "threshold" in target.read_text()
