"""`robust eval/certify` on models users bring: natural shapes (N x C x H x W, never flattened),
normalisation inside the model, token-id models reported as not applicable (never exit 70)."""

from __future__ import annotations

import json

import byom_models as bm
import pytest
import torch
from safetensors.torch import load_file, save_file

from torchshield.cli.app import run
from torchshield.model.loading import protect_model

pytest.importorskip("transformers")


def _run(capsys, *argv):
    code = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    protect_model(bm.tiny_vit(root / "vit"), root / "vit.tsb")
    protect_model(bm.tiny_gpt2(root / "gpt2"), root / "gpt2.tsb")
    torch.save(bm.trained_resnet(num_classes=4).state_dict(), root / "resnet.pt")
    protect_model(root / "resnet.pt", root / "resnet.tsb",
                  architecture={"kind": "factory", "target": "byom_models:resnet_mini", "kwargs": {"num_classes": 4}},
                  input_spec={"kind": "image", "shape": [3, 16, 16], "dtype": "float32", "min": 0.0, "max": 1.0})
    g = torch.Generator().manual_seed(0)
    save_file({"inputs": torch.rand(6, 3, 16, 16, generator=g), "labels": torch.randint(0, 4, (6,), generator=g)},
              root / "images.safetensors")
    return root


def test_image_model_is_attacked_in_its_natural_shape(bundles, tmp_path, capsys):
    code, out, err = _run(capsys, "robust", "eval", bundles / "resnet.tsb", "--data", bundles / "images.safetensors",
                          "--attack", "pgd,square", "--eps", "0.05", "--steps", "2", "--queries", "5",
                          "--allow-factory", "byom_models:resnet_mini", "--save-adv", tmp_path / "adv.safetensors",
                          "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "evaluated" and doc["input_shape"] == [3, 16, 16] and doc["examples"] == 6
    adv = load_file(str(tmp_path / "adv.safetensors"))
    x = load_file(str(bundles / "images.safetensors"))["inputs"]
    for name in ("pgd@0.05", "square@0.05"):
        assert adv[name].shape == (6, 3, 16, 16)
        assert float((adv[name] - x).abs().max()) <= 0.05 + 1e-6 and float(adv[name].min()) >= 0.0
    for row in doc["results"]:
        assert row["robust_accuracy"] <= doc["clean_accuracy"]


def test_flattened_inputs_are_refused_naming_the_shape(bundles, tmp_path, capsys):
    d = load_file(str(bundles / "images.safetensors"))
    save_file({"inputs": d["inputs"].reshape(6, -1).contiguous(), "labels": d["labels"]}, tmp_path / "flat.safetensors")
    code, _, err = _run(capsys, "robust", "eval", bundles / "resnet.tsb", "--data", tmp_path / "flat.safetensors",
                        "--allow-factory", "byom_models:*")
    assert code == 2 and "(768,)" in err and "(3, 16, 16)" in err and "Traceback" not in err


def test_normalisation_is_inside_the_attacked_model(bundles, capsys):
    """Clean accuracy reported == accuracy of the HF model on inputs normalised with the
    processor's mean/std, computed here independently with transformers."""
    from transformers import AutoModelForImageClassification

    d = load_file(str(bundles / "images.safetensors"))
    ref = AutoModelForImageClassification.from_pretrained(bundles / "vit").eval()
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = float((ref(pixel_values=(d["inputs"] - mean) / std).logits.argmax(1) == d["labels"]).double().mean())
    code, out, err = _run(capsys, "robust", "eval", bundles / "vit.tsb", "--data", bundles / "images.safetensors",
                          "--attack", "fgsm", "--eps", "0.03", "--json")
    assert code == 0, err
    assert json.loads(out)["clean_accuracy"] == pytest.approx(expected)


def test_token_models_are_not_applicable_never_a_crash(bundles, capsys, tmp_path):
    code, out, err = _run(capsys, "robust", "eval", bundles / "gpt2.tsb", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "not_applicable" and "token ids" in doc["reason"]
    code, _, err = _run(capsys, "robust", "certify", bundles / "gpt2.tsb", "--n", "10")
    assert code == 2 and "token ids" in err and "Traceback" not in err
    code, out, err = _run(capsys, "robust", "eval", bundles / "gpt2.tsb", "--attack", "standard")
    assert code == 0 and "not applicable" in out and "token ids" in " ".join(out.split())
    det = tmp_path / "det.json"
    det.write_text("{}")
    for argv in (["calibrate-detector", bundles / "gpt2.tsb", "--out", tmp_path / "new.json"],
                 ["detect", bundles / "gpt2.tsb", "--detector", det]):
        code, _, err = _run(capsys, "robust", *argv)
        assert code == 2 and "token ids" in err and "Traceback" not in err, argv
    assert not (tmp_path / "new.json").exists()


def test_logits_model_unwraps_outputs():
    from torchshield.robust.subject import LogitsModel

    class Out:
        def __init__(self, t):
            self.logits = t

    x = torch.randn(2, 3)
    assert torch.equal(LogitsModel(torch.nn.Identity())(x), x)
    assert torch.equal(LogitsModel(_Wrap(lambda t: Out(t * 2)))(x), x * 2)
    assert torch.equal(LogitsModel(_Wrap(lambda t: (t + 1, None)))(x), x + 1)


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)
