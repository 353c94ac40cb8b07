"""Bring your own model, end to end through the CLI as a user types it: a BERT-style classifier,
a GPT-2-style causal LM (tied embeddings) and a ViT-style image classifier built from tiny
configs with random init and saved with ``save_pretrained`` (sharded), and a ResNet-style CNN
(BatchNorm, residual ``+=``) saved with ``torch.save(state_dict)``. For each: scan, protect
(encrypt + sign), verify, ``load_model`` (outputs against the user's own model), robust eval and
report. Fine-tuning with ``train``, watermark, privacy audit and ``torchshield serve`` of these models:
``test_byom_lifecycle.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

pytestmark = pytest.mark.integration
transformers = pytest.importorskip("transformers")

import byom_models as bm  # noqa: E402 - after importorskip

from torchshield import load_model  # noqa: E402
from torchshield.cli.app import run  # noqa: E402

IDS = torch.tensor([[2, 5, 6, 7, 3], [2, 9, 10, 3, 0]])
IMAGES = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
LABELS = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(1))


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """What the user has on disk, and their keys."""
    root = tmp_path_factory.mktemp("byom")
    bm.tiny_bert(root / "bert")
    bm.tiny_gpt2(root / "gpt2")
    bm.tiny_vit(root / "vit")
    torch.save(bm.trained_resnet(num_classes=4).state_dict(), root / "resnet.pt")
    save_file({"inputs": IMAGES, "labels": LABELS}, root / "images.safetensors")
    assert run(["keys", "init", "--out", str(root / "shield.key")]) == 0
    assert run(["keys", "signing-init", "--out", str(root / "signer")]) == 0
    return root


MODELS = {
    "bert": {"src": "bert", "auto": "AutoModelForSequenceClassification", "image": False},
    "gpt2": {"src": "gpt2", "auto": "AutoModelForCausalLM", "image": False},
    "vit": {"src": "vit", "auto": "AutoModelForImageClassification", "image": True},
    "resnet": {"src": "resnet.pt", "image": True,
               "protect": ["--factory", "byom_models:resnet_mini", "--arch-option", "num_classes=4",
                           "--input-shape", "3,16,16", "--input-range", "0,1"]},
}


def _reference(user: Path, name: str):
    spec = MODELS[name]
    if "auto" in spec:
        model = getattr(transformers, spec["auto"]).from_pretrained(user / spec["src"])
    else:
        model = bm.ResNetMini(num_classes=4)
        model.load_state_dict(torch.load(user / "resnet.pt", weights_only=True))
    return model.eval()


def _outputs(model, name: str) -> torch.Tensor:
    for p in model.parameters():
        p.data = p.data.clone()  # same memory alignment on both sides: CPU BLAS kernels depend on it
    with torch.no_grad():
        if name == "resnet":
            return model(IMAGES)
        if name == "vit":
            return model(pixel_values=IMAGES).logits
        return model(input_ids=IDS, attention_mask=(IDS != 0).long()).logits


@pytest.mark.parametrize("name", list(MODELS))
def test_bring_your_own_model(user, tmp_path, capsys, name):
    spec = MODELS[name]
    src = user / spec["src"]
    key, signer, pub = user / "shield.key", user / "signer.key", user / "signer.pub"

    # scan: every weight file the user would hand over
    weights = sorted(src.glob("*.safetensors")) if src.is_dir() else [src]
    code, out, _ = cli(capsys, "model", "scan", *weights, "--json")
    assert code == 0

    # protect: encrypted and signed, one bundle
    bundle = tmp_path / f"{name}.tsb"
    code, out, _ = cli(capsys, "model", "protect", src, "--out", bundle, "--encrypt", "--key-file", key,
                       "--sign", signer, *spec.get("protect", []), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["encrypted"] and doc["signed"] and doc["architecture"]["kind"] in ("hf", "factory")
    if name == "gpt2":
        assert doc["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    if spec["image"]:
        assert doc["preprocessing"]["input"]["shape"] == [3, 16, 16]
    else:
        assert doc["preprocessing"]["input"]["kind"] == "tokens" and doc["preprocessing"]["input"]["min"] == 0

    # verify: signature by the expected signer, every chunk decrypts
    code, out, _ = cli(capsys, "model", "verify", bundle, "--pubkey", pub, "--key-file", key, "--json")
    assert code == 0 and json.loads(out)["ok"]

    # load_model: the ready module, outputs as the user's own model gives them
    from torchshield.crypto.keys import read_key_file

    model = load_model(bundle, key=read_key_file(key), verify_with=pub)
    assert torch.equal(_outputs(model, name), _outputs(_reference(user, name), name))

    # robust eval: natural shapes for images; token models are "not applicable" with exit 0, never 70.
    # robust/ is being reworked elsewhere: only the exit code and the model named are asserted here
    code, out, _ = cli(capsys, "robust", "eval", bundle, "--key-file", key, "--pubkey", pub,
                       "--data", user / "images.safetensors", "--attack", "fgsm", "--eps", "0.03", "--json")
    assert code == 0
    assert json.loads(out)["model"] == str(bundle)

    # report: never aborts; robustness runs on images, says why not on token models
    code, out, _ = cli(capsys, "report", bundle, "--key-file", key, "--pubkey", pub, "--quick",
                       "--data", user / "images.safetensors", "--skip", "serving,privacy",
                       "--out", tmp_path / "report", "--json")
    assert code in (0, 1)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    sections = {s["id"]: s for s in report["sections"]}
    assert set(sections) == {"model-file", "robustness", "watermark", "pii-residue"}
    assert sections["model-file"]["verdict"] != "skipped"
    robust = sections["robustness"]
    if spec["image"]:
        assert robust["verdict"] != "skipped", robust["findings"]
    else:
        assert robust["verdict"] == "skipped" and robust["findings"][0]["reason"]


def test_export_hf_round_trip_through_the_cli(user, tmp_path, capsys):
    key = user / "shield.key"
    cli(capsys, "model", "protect", user / "gpt2", "--out", tmp_path / "g.tsb", "--encrypt", "--key-file", key)
    code, out, _ = cli(capsys, "model", "export", tmp_path / "g.tsb", "--format", "hf", "--out", tmp_path / "back",
                       "--key-file", key, "--json")
    assert code == 0 and "model.safetensors" in json.loads(out)["files"]
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert back.lm_head.weight is back.transformer.wte.weight
    assert torch.equal(_outputs(back, "gpt2"), _outputs(_reference(user, "gpt2"), "gpt2"))
