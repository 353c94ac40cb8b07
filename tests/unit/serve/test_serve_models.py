"""Models from bundles: encrypted ones decrypted in memory only, inputs validated against the
metadata spec before the model runs, outputs hardened per policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchshield.errors import FormatError, KeyMaterialError
from torchshield.serve.models import InvalidInput, OutputPolicy, TrustPolicy, load_bundle_model


def _load(path, **kw):
    """load_bundle_model trusting the signer the harness signed ``path`` with."""
    return load_bundle_model(path, trust=TrustPolicy.from_files([str(Path(path).parent / "signer.pub")]), **kw)


def test_encrypted_bundle_loads_without_plaintext_on_disk(bundle, master_key, tmp_path):
    before = {p: p.stat().st_size for p in tmp_path.rglob("*")}
    m = _load(bundle, master=master_key)
    assert {p: p.stat().st_size for p in tmp_path.rglob("*")} == before
    assert m.encrypted and m.name == "digits" and m.spec.shape == (8,)
    with pytest.raises(KeyMaterialError):
        _load(bundle)


def test_predictions_match_the_rebuilt_module(bundle, master_key):
    import torchshield
    from torchshield.nn.zoo import build_model

    m = _load(bundle, master=master_key)
    ref = build_model({"type": "mlp", "hidden": [16]}, in_shape=(8,), num_classes=4)
    ref.load_state_dict(torchshield.load(bundle, key=master_key))
    x = torch.rand(5, 8) * 16
    assert m.predict(x)["labels"] == ref(x).argmax(-1).tolist()


def test_metadata_without_architecture_is_a_format_error(tmp_path):
    import torchshield

    p = tmp_path / "bare.tsb"
    torchshield.save({"w": torch.zeros(2)}, p)
    with pytest.raises(FormatError, match="metadata"):
        load_bundle_model(p, trust=TrustPolicy(allow_unsigned=True))


@pytest.mark.parametrize("payload,message", [
    ([1, 2], "exactly one field"),
    ({"inputs": [], "x": 1}, "exactly one field"),
    ({"inputs": []}, "non-empty"),
    ({"inputs": "abc"}, "non-empty"),
    ({"inputs": [[1] * 8] * 65}, "at most 64"),
    ({"inputs": [[1] * 7]}, "shape [8]"),
    ({"inputs": [[1] * 8, [1] * 7]}, "shape"),
    ({"inputs": [[[1] * 8]]}, "shape [8]"),
    ({"inputs": [["1"] * 8]}, "numbers only"),
    ({"inputs": [[True] * 8]}, "numbers only"),
    ({"inputs": [[None] * 8]}, "numbers only"),
    ({"inputs": [[float("nan")] + [1] * 7]}, "NaN"),
    ({"inputs": [[float("inf")] + [1] * 7]}, "NaN"),
    ({"inputs": [[-1] + [1] * 7]}, ">= 0"),
    ({"inputs": [[17] + [1] * 7]}, "<= 16"),
    ({"inputs": [[1e30] + [1] * 7]}, "<= 16"),
    ({"inputs": [[10**30] + [1] * 7]}, "numbers only"),
])
def test_invalid_inputs_are_rejected_before_the_model(bundle, master_key, payload, message):
    m = _load(bundle, master=master_key)
    m.module = None  # the model must not run on invalid input
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        m.validate(payload)


@pytest.mark.parametrize("mode", ["label", "top_k", "probabilities"])
def test_output_hardening(bundle, master_key, mode):
    m = _load(bundle, master=master_key, output=OutputPolicy(mode=mode, top_k=2, decimals=1))
    out = m.predict(m.validate({"inputs": [[3.0] * 8, [9.0] * 8]}))
    assert len(out["predictions"]) == 2
    if mode == "label":
        assert out["outputs"] == out["predictions"]
    elif mode == "top_k":
        assert [len(r) for r in out["outputs"]] == [2, 2]
        assert [r[0]["label"] for r in out["outputs"]] == out["predictions"]
        assert all(round(e["p"], 1) == e["p"] for r in out["outputs"] for e in r)
    else:
        assert all(len(r) == 4 and all(round(p, 1) == p for p in r) for r in out["outputs"])


def test_bad_output_policy():
    from torchshield.errors import InputError

    with pytest.raises(InputError):
        OutputPolicy(mode="logits")


def test_class_names_go_to_outputs_and_predictions_stay_indices(tmp_path, master_key):
    from serve_harness import make_bundle

    p = make_bundle(tmp_path / "named.tsb", master_key, classes=["a", "b", "c", "d"], serve={"output": "label"})
    m = _load(p, master=master_key)
    out = m.predict(m.validate({"inputs": [[5.0] * 8]}))
    assert isinstance(out["predictions"][0], int) and out["outputs"] == [["a", "b", "c", "d"][out["predictions"][0]]]


def test_inline_calibration_sizes_bodies_by_measured_time(bundle, master_key):
    """A small model earns room on the event loop for bodies of at least one input; a budget it
    cannot meet, or none, sends every body to a worker thread."""
    import json

    m = _load(bundle, master=master_key)
    one_input = len(json.dumps({"inputs": [[0] * 8]}, separators=(",", ":")))
    assert m.calibrate_inline(0.05) >= one_input and m.loop_bytes >= one_input
    assert m.calibrate_inline(1e-9) == 0 and m.loop_bytes == 0
    assert m.calibrate_inline(0) == 0


def test_predict_without_waiting_yields_to_a_running_batch(bundle, master_key):
    m = _load(bundle, master=master_key)
    x = torch.zeros(2, 8)
    with m.forwards.exclusive():  # another thread is running the model
        assert m.predict(x, wait=False) is None
    assert m.predict(x, wait=False)["labels"] == m.predict(x)["labels"]
