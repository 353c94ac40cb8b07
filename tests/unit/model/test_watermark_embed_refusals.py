"""`model watermark embed` cannot damage a model silently (issue 18, item 3; bugs found by trying it
from outside): labels are the model's class indices, the accuracy guard cannot be switched off by
accident or measured on a handful of rows, data the model cannot read and models that are not
classifiers are refused before any work (exit 2, no traceback, nothing written), and a dropped DP
claim keeps the architecture fixes the weights need."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import torchshield
from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file

FACTORY = "byom_models:resnet_mini"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = run([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = np.repeat((raw.data / 16.0).reshape(-1, 1, 8, 8), 3, axis=1).astype(np.float32)
    return x, raw.target.astype(np.int64)


def _csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    frame = pd.DataFrame(x.reshape(len(x), -1), columns=[f"p{i}" for i in range(x[0].size)])
    frame["label"] = y
    frame.to_csv(path, index=False)
    return path


def _token_csv(path: Path, ids: np.ndarray, labels: np.ndarray) -> Path:
    frame = pd.DataFrame(ids, columns=[f"t{i}" for i in range(ids.shape[1])])
    frame["label"] = labels
    frame.to_csv(path, index=False)
    return path


def _accuracy(bundle: Path, x: np.ndarray, y: np.ndarray) -> float:
    model = torchshield.load_model(bundle, allow_factories=[FACTORY])
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A trained ResNet-style CNN on digits as 3 x 8 x 8 images, protected with and without its input spec."""
    from byom_models import resnet_mini

    folder = tmp_path_factory.mktemp("embedrefuse")
    x, y = _digits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = resnet_mini(10)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                           batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
        model.train()
        for _ in range(6):
            for xb, yb in data:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    torch.save(model.state_dict(), folder / "cnn.pt")
    key = folder / "owner.key"
    write_key_file(key)
    common = ["--factory", FACTORY, "--arch-option", "num_classes=10"]
    assert run(["model", "protect", str(folder / "cnn.pt"), "--out", str(folder / "cnn.tsb"), *common,
                "--input-shape", "3,8,8", "--input-range", "0,1"]) == 0
    assert run(["model", "protect", str(folder / "cnn.pt"), "--out", str(folder / "nospec.tsb"), *common]) == 0
    return folder, key, x, y


def _embed(capsys, folder, key, bundle, data, *extra) -> tuple[int, str, str]:
    return _cli(capsys, "model", "watermark", "embed", folder / bundle, "--out", folder / "out.tsb", "--key-file", key,
                "--allow-factory", FACTORY, "--data", data, "--force", *extra)


def test_labels_are_the_models_class_indices_not_their_rank(cnn, capsys):
    """Data without class 0: before, digit 1 was trained as class 0, and so on (accuracy 0.98 -> 0.09, exit 0)."""
    folder, key, x, y = cnn
    keep = y != 0
    data = _csv(folder / "no0.csv", x[keep], y[keep])
    before = _accuracy(folder / "cnn.tsb", x, y)
    code, out, err = _embed(capsys, folder, key, "cnn.tsb", data, "--bits", "48", "--strength", "16", "--epochs", "5",
                            "--max-accuracy-drop", "1", "--json")
    assert code == 0, err
    assert _accuracy(folder / "out.tsb", x, y) >= before - 0.05
    assert json.loads(out)["accuracy_before"] >= before - 0.05  # the guard measured against the true classes


@pytest.mark.parametrize(("change", "extra", "message"), [
    ("label 12", [], "label value 12 was not among"),
    ("pixels x 16", [], "outside the range [0, 1]"),
    ("40 rows", [], "held-out rows, too few"),
    ("none", ["--max-accuracy-drop", "nan"], "--max-accuracy-drop nan"),
    ("none", ["--max-accuracy-drop", "-0.1"], "--max-accuracy-drop -0.1"),
    ("none", ["--method", "trigger", "--bits", "32"], "--bits applies to --method whitebox"),
])
def test_bad_data_and_options_are_refused_before_any_work(cnn, capsys, change, extra, message):
    folder, key, x, y = cnn
    x, y = x.copy(), y.copy()
    if change == "label 12":
        y[5] = 12
    elif change == "pixels x 16":
        x = x * 16
    elif change == "40 rows":
        x, y = x[:40], y[:40]
    data = _csv(folder / "bad.csv", x, y)
    (folder / "out.tsb").unlink(missing_ok=True)
    code, _, err = _embed(capsys, folder, key, "cnn.tsb", data, *extra)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert not (folder / "out.tsb").exists()


def test_a_model_that_cannot_read_the_data_is_refused_with_the_fix(cnn, capsys):
    """No input spec: the rows stay flat [N, 192], which a CNN cannot read (before: internal error, exit 70)."""
    folder, key, x, y = cnn
    data = _csv(folder / "flat.csv", x, y)
    code, _, err = _embed(capsys, folder, key, "nospec.tsb", data, "--method", "whitebox")
    assert code == 2 and "cannot read --data's examples of shape [192]" in err and "--input-shape" in err, err
    assert "internal error" not in err


def test_a_language_model_is_refused_not_crashed(tmp_path, capsys):
    pytest.importorskip("transformers")
    from byom_models import tiny_gpt2

    bundle = tmp_path / "gpt2.tsb"
    assert run(["model", "protect", str(tiny_gpt2(tmp_path / "hf")), "--out", str(bundle)]) == 0
    ids = np.random.default_rng(0).integers(1, 10, size=(300, 8))
    _token_csv(tmp_path / "tokens.csv", ids, ids[:, 0] % 2)
    key = tmp_path / "owner.key"
    write_key_file(key)
    for method in ("whitebox", "trigger"):
        code, _, err = _cli(capsys, "model", "watermark", "embed", bundle, "--out", tmp_path / "x.tsb",
                            "--key-file", key, "--data", tmp_path / "tokens.csv", "--method", method)
        assert code == 2 and "not one score per class" in err and "internal error" not in err, err
        assert not (tmp_path / "x.tsb").exists()


def test_token_ids_that_are_not_integers_are_refused(tmp_path, capsys):
    pytest.importorskip("transformers")
    from byom_models import tiny_bert

    bundle = tmp_path / "bert.tsb"
    assert run(["model", "protect", str(tiny_bert(tmp_path / "hf")), "--out", str(bundle)]) == 0
    ids = np.random.default_rng(0).integers(1, 10, size=(300, 8)).astype(float)
    ids[3, 2] = 4.5
    _token_csv(tmp_path / "tokens.csv", ids, np.arange(300) % 3)
    key = tmp_path / "owner.key"
    write_key_file(key)
    code, _, err = _cli(capsys, "model", "watermark", "embed", bundle, "--out", tmp_path / "x.tsb",
                        "--key-file", key, "--data", tmp_path / "tokens.csv")
    assert code == 2 and "is not token ids" in err, err  # before: 4.5 was silently rounded to 4


def test_an_obfuscated_bundle_names_deobfuscate(cnn, capsys, tmp_path):
    from torchshield.errors import FormatError

    folder, key, _, _ = cnn
    obf = tmp_path / "obf.tsb"
    code, _, err = _cli(capsys, "model", "obfuscate", folder / "cnn.tsb", "--out", obf, "--key-file", key,
                        "--allow-factory", FACTORY)
    assert code == 0, err
    with pytest.raises(FormatError, match="obfuscated with scrambled names") as info:
        torchshield.load_model(obf, allow_factories=[FACTORY])
    assert "deobfuscate" in (info.value.hint or "")


def test_a_dropped_dp_claim_keeps_the_fixes_the_weights_need(tmp_path, capsys):
    """DP training replaced BatchNorm by GroupNorm; embed (no DP) drops the claim, and before this the
    fixes went with it: the marked bundle no longer loaded ('tensors do not fit')."""
    import yaml

    from torchshield.model.sources.records import dp_claim
    from torchshield.train.recipe import load_trained

    doc = {"model": {"type": "byom_models:bn_mlp"}, "data": "sklearn:digits", "optimizer": {"name": "sgd", "lr": 0.5},
           "epochs": 1, "batch_size": 256, "seed": 0, "output": {"bundle": "dp.tsb"},
           "privacy": {"epsilon": 8, "delta": 1e-5, "noise_multiplier": 1.0}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(doc))
    assert run(["train", str(tmp_path / "t.yaml"), "--json"]) == 0
    key = tmp_path / "owner.key"
    write_key_file(key)
    marked = tmp_path / "marked.tsb"
    code, _, err = _cli(capsys, "model", "watermark", "embed", tmp_path / "dp.tsb", "--out", marked,
                        "--key-file", key, "--bits", "48", "--strength", "4", "--epochs", "3", "--max-accuracy-drop", "1")
    assert code == 0 and "DP claim" in err, err
    manifest = torchshield.inspect(marked).manifest
    assert dp_claim(manifest) is None and manifest["privacy"] == {"model_fixes": ["2: BatchNorm1d -> GroupNorm"]}
    assert "privacy" not in manifest["metadata"]["config"]  # the training config's DP section went with the claim
    model, _ = load_trained(marked)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


def test_a_hugging_face_whitebox_record_names_the_bundles_own_tensors(tmp_path, capsys):
    """embed trains an HF model through a logits wrapper (``inner.``); the record named the wrapper's
    tensors, so verification found them only by a shape search with a Bonferroni-weakened p-value."""
    pytest.importorskip("transformers")
    from byom_models import _bert_tokenizer
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(tmp_path / "hf")
    _bert_tokenizer().save_pretrained(tmp_path / "hf")
    bundle, marked, record = tmp_path / "bert.tsb", tmp_path / "marked.tsb", tmp_path / "mark.json"
    assert run(["model", "protect", str(tmp_path / "hf"), "--out", str(bundle)]) == 0
    ids = np.random.default_rng(0).integers(5, 60, size=(300, 8))
    _token_csv(tmp_path / "tokens.csv", ids, ids[:, 1] % 3)
    key = tmp_path / "owner.key"
    write_key_file(key)
    code, _, err = _cli(capsys, "model", "watermark", "embed", bundle, "--out", marked, "--key-file", key,
                        "--data", tmp_path / "tokens.csv", "--record", record, "--bits", "64", "--strength", "100",
                        "--lr", "0.01", "--epochs", "10", "--max-accuracy-drop", "1")
    assert code == 0, err
    layers = set(json.loads(record.read_text())["layers"])
    assert layers == {"bert.embeddings.word_embeddings.weight"}
    assert layers <= set(torchshield.inspect(marked).manifest["tensors"])
    code, out, err = _cli(capsys, "model", "watermark", "verify", marked, "--record", record, "--key-file", key,
                          "--json")
    assert code == 0 and json.loads(out)["p_value"] < 1e-9, err
