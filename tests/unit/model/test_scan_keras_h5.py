"""Issue 21, item 5: Keras .h5 files are read (model config via h5py in a child process), and
Lambda layers, function references and custom objects in them are flagged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import scan_corpus as corpus

from torchshield.model.scan import keras, scan

h5py = pytest.importorskip("h5py")

_DENSE = {"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "relu"}}
# the legacy (Keras 2) Lambda layout: base64 of marshalled bytecode (a placeholder here, never run)
_LAMBDA = {
    "class_name": "Lambda",
    "config": {"name": "l", "function": ["4wEAAAAAAAAA", None, None], "function_type": "lambda"},
}


def _model(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"class_name": "Sequential", "config": {"name": "s", "layers": list(layers)}}


def _h5(
    path: Path, model_config: dict[str, Any] | None, training_config: dict[str, Any] | None = None
) -> Path:
    with h5py.File(path, "w") as f:
        if model_config is not None:
            f.attrs["model_config"] = json.dumps(model_config)
            f.attrs["keras_version"] = "2.15.0"
        if training_config is not None:
            f.attrs["training_config"] = json.dumps(training_config).encode()  # bytes, as older Keras wrote
        f.create_dataset("model_weights/d/kernel", data=[[0.5, -0.5]])
    return path


def test_benign_model_and_weights_only_files_are_safe(tmp_path: Path) -> None:
    model = scan(_h5(tmp_path / "model.h5", _model(_DENSE))).files[0]
    assert model.status == "safe" and model.format == "keras-h5"
    weights = scan(_h5(tmp_path / "weights.h5", None)).files[0]
    assert weights.status == "safe" and weights.format == "hdf5"


def test_lambda_layer_is_critical(tmp_path: Path) -> None:
    report = scan(_h5(tmp_path / "lambda.h5", _model(_DENSE, _LAMBDA)))
    file = report.files[0]
    assert file.status == "unsafe" and report.exit_code == 1
    hit = next(f for f in file.findings if f.callable == "keras.layers.Lambda")
    assert hit.severity == "critical" and hit.member == "<HDF5 attribute model_config>"


def test_keras3_lambda_object_is_critical(tmp_path: Path) -> None:
    act = {"class_name": "__lambda__", "config": {"value": ["4wEAAAAAAAAA", None, None]}}
    dense = {"class_name": "Dense", "module": "keras.layers", "config": {"activation": act}}
    assert "keras.layers.Lambda" in {
        f.callable for f in scan(_h5(tmp_path / "l3.h5", _model(dense))).findings if f.severity == "critical"
    }


@pytest.mark.parametrize(
    ("layer", "callable_", "severity"),
    [
        (
            {
                "class_name": "Activation",
                "config": {
                    "activation": {
                        "module": "os",
                        "class_name": "function",
                        "config": "system",
                        "registered_name": "function",
                    }
                },
            },
            "os.system",
            "critical",
        ),
        (
            {"module": "__main__", "class_name": "MyLayer", "config": {}, "registered_name": "MyLayer"},
            "__main__.MyLayer",
            "high",
        ),
        (
            {"module": "subprocess", "class_name": "Popen", "config": {}, "registered_name": "Custom>Popen"},
            "subprocess.Popen",
            "critical",
        ),
        ({"class_name": "Custom>Scaler", "config": {}}, "Custom>Scaler", "high"),
    ],
    ids=["function-os.system", "custom-main", "custom-dangerous-module", "registered-name"],
)
def test_function_references_and_custom_objects(
    tmp_path: Path, layer: dict[str, Any], callable_: str, severity: str
) -> None:
    file = scan(_h5(tmp_path / "c.h5", _model(_DENSE, layer))).files[0]
    assert file.status == "unsafe"
    assert [f.severity for f in file.findings if f.callable == callable_] == [severity]


def test_keras_builtins_with_module_field_are_not_custom(tmp_path: Path) -> None:
    layer = {"module": "keras.layers", "class_name": "Dense", "config": {}, "registered_name": None}
    hub = {
        "module": "keras_hub.src.models.bert",
        "class_name": "BertBackbone",
        "config": {},
        "registered_name": "keras_hub>BertBackbone",
    }
    assert scan(_h5(tmp_path / "k.h5", _model(layer, hub))).safe


def test_custom_object_accepted_by_allow(tmp_path: Path) -> None:
    layer = {
        "module": "mypkg.layers",
        "class_name": "Scaler",
        "config": {},
        "registered_name": "mypkg>Scaler",
    }
    path = _h5(tmp_path / "a.h5", _model(layer))
    assert not scan(path).safe
    assert scan(path, allow=["mypkg.*"]).safe


def test_training_config_is_read_too(tmp_path: Path) -> None:
    loss = {
        "loss": {"module": "os", "class_name": "function", "config": "system", "registered_name": "function"}
    }
    file = scan(_h5(tmp_path / "t.h5", _model(_DENSE), loss)).files[0]
    hit = next(f for f in file.findings if f.callable == "os.system")
    assert hit.member == "<HDF5 attribute training_config>"


def test_malformed_hdf5_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    report = scan(path)
    assert report.files[0].status == "unreadable" and report.exit_code == 2
    assert "malformed HDF5" in (report.files[0].unreadable_reason or "")


def test_model_config_that_is_not_json_is_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "nj.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = "{not json"
    assert any(f.kind == "unscannable" for f in scan(path).files[0].findings) and not scan(path).safe


def test_without_h5py_the_file_is_unreadable_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _h5(tmp_path / "lambda.h5", _model(_LAMBDA))
    monkeypatch.setattr(keras, "h5py_available", lambda: False)
    report = scan(path)
    assert report.files[0].status == "unreadable" and report.exit_code == 2
    assert "torchshield[keras]" in (report.files[0].unreadable_reason or "")


def test_reader_crash_is_unsafe_not_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _h5(tmp_path / "m.h5", _model(_DENSE))
    monkeypatch.setattr(keras, "_H5_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    file = scan(path).files[0]
    assert file.status == "unsafe" and "died on this file" in file.findings[0].message


def test_reader_hang_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _h5(tmp_path / "m.h5", _model(_DENSE))
    monkeypatch.setattr(keras, "_H5_CHILD", "import time; time.sleep(30)")
    monkeypatch.setattr(keras, "H5_TIMEOUT_S", 1.0)
    file = scan(path).files[0]
    assert file.status == "unsafe" and "did not finish" in file.findings[0].message


def test_h5_inside_a_tar_is_read_from_its_bytes(tmp_path: Path) -> None:
    inner = _h5(tmp_path / "inner.h5", _model(_LAMBDA)).read_bytes()
    path = tmp_path / "bundle.tar"
    path.write_bytes(corpus.tar_of({"model/lambda.h5": inner}))
    hit = next(f for f in scan(path).findings if f.callable == "keras.layers.Lambda")
    assert hit.member == "model/lambda.h5 > <HDF5 attribute model_config>"


def test_reading_runs_nothing_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a function reference to a canary module: judged by name, never imported
    canary = tmp_path / "ran.txt"
    (tmp_path / "ts_canary_h5.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\ndef go(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    act = {"module": "ts_canary_h5", "class_name": "function", "config": "go", "registered_name": "function"}
    file = scan(
        _h5(tmp_path / "c.h5", _model({"class_name": "Activation", "config": {"activation": act}}))
    ).files[0]
    assert not canary.exists() and [f.severity for f in file.findings if f.callable == "ts_canary_h5.go"] == [
        "high"
    ]
