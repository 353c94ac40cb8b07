"""fl.yaml validation: every bad input named in issue 8 is refused with a clear message and exit 2."""

from __future__ import annotations

import pytest
import yaml

from torchshield.cli.app import run
from torchshield.errors import InputError
from torchshield.federated.config import parse_config
from torchshield.federated.task import build_task


def test_defaults_and_shorthands() -> None:
    cfg = parse_config({"clients": 4, "strategy": "fedprox", "partition": {"kind": "dirichlet", "alpha": 0.3},
                        "secure_aggregation": True, "privacy": {"clip": 2.0, "target_epsilon": 5}})
    assert cfg.strategy.name == "fedprox" and cfg.partition.alpha == 0.3
    assert cfg.secure_aggregation is not None and cfg.secure_aggregation.reconstruction_threshold <= 3
    assert cfg.privacy is not None and cfg.privacy.target_epsilon == 5 and cfg.privacy.noise_multiplier is None
    assert cfg.clients_per_round == 4 and cfg.sample_rate == 1.0


@pytest.mark.parametrize(("raw", "needle"), [
    ({"partition": {"kind": "dirichlet", "alpha": 0}}, "partition.alpha"),
    ({"partition": {"kind": "dirichlet", "alpha": -1.0}}, "partition.alpha"),
    ({"partition": "powerlaw"}, "partition.kind"),
    ({"clients": 3, "secure_aggregation": {"num_shares": 3, "reconstruction_threshold": 4}}, "reconstruction_threshold"),
    ({"clients": 5, "fraction_fit": 0.4, "secure_aggregation": {"num_shares": 2, "reconstruction_threshold": 3}},
     "reconstruction_threshold"),
    ({"clients": 3, "secure_aggregation": {"num_shares": 5, "reconstruction_threshold": 2}}, "num_shares"),
    ({"clients": 1, "secure_aggregation": True}, "at least 2 clients"),
    ({"strategy": "fedsgd"}, "strategy.name"),
    ({"privacy": {"clip": 1.0}}, "exactly one of"),
    ({"privacy": {"clip": 1.0, "noise_multiplier": 1.0, "target_epsilon": 3}}, "exactly one of"),
    ({"privacy": {"clip": 0, "noise_multiplier": 1.0}}, "privacy.clip"),
    ({"rounds": 0}, "rounds"),
    ({"fraction_fit": 0.0}, "fraction_fit"),
    ({"clients": 3, "dropout": {"clients": 3}}, "dropout.clients"),
    ({"clients": 4, "secure_aggregation": {"num_shares": 4, "reconstruction_threshold": 3}, "dropout": {"clients": 2}},
     "SecAgg+ survives"),
    ({"client": 3}, "unknown field"),
    ({"dataset": "mnist"}, "dataset.name"),
])
def test_bad_config_is_refused_naming_the_field(raw: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle.replace("+", r"\+")):
        parse_config(raw)


def test_more_clients_than_data() -> None:
    cfg = parse_config({"clients": 2000, "dataset": "breast_cancer"})
    with pytest.raises(InputError, match="larger than the 455 training samples"):
        build_task(cfg)


def test_cli_bad_config_exits_2_with_one_line(tmp_path, capsys) -> None:
    p = tmp_path / "fl.yaml"
    p.write_text(yaml.safe_dump({"clients": 3, "partition": {"kind": "dirichlet", "alpha": 0}}))
    assert run(["fl", "simulate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "partition.alpha must be a finite number > 0" in err and "Traceback" not in err
    assert run(["fl", "simulate", str(tmp_path / "missing.yaml")]) == 2
    (tmp_path / "bad.yaml").write_text("clients: [1,\n")
    assert run(["fl", "simulate", str(tmp_path / "bad.yaml")]) == 2


def test_yaml_delta_in_e_notation_is_a_number(tmp_path) -> None:
    from torchshield.federated.config import load_config

    p = tmp_path / "fl.yaml"
    p.write_text("clients: 4\nprivacy: {clip: 1.0, noise_multiplier: 1.0, delta: 1e-5}\n")  # PyYAML: '1e-5' (str)
    cfg = load_config(p)
    assert cfg.privacy is not None and cfg.privacy.delta == 1e-5 and cfg.privacy.neighbouring == "replace-one"
    with pytest.raises(InputError, match="privacy.delta must be a number"):
        parse_config({"privacy": {"noise_multiplier": 1.0, "delta": "tiny"}})


def test_an_existing_file_as_output_dir_is_refused_before_the_run(tmp_path, capsys) -> None:
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(InputError, match="output.dir"):
        parse_config({"output": {"dir": str(tmp_path / "taken")}})
    p = tmp_path / "fl.yaml"
    p.write_text(yaml.safe_dump({"clients": 3}))
    assert run(["fl", "simulate", str(p), "--out", str(tmp_path / "taken")]) == 2
    assert "output.dir" in capsys.readouterr().err
