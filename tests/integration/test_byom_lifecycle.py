"""Bring your own model, the rest of its life through the CLI as a user types it, for the four
models users have (``byom_models``: a BERT-style classifier, a GPT-2-style causal LM with tied
embeddings and a ViT-style classifier built from tiny configs with random init and saved with
``save_pretrained`` sharded, and a ResNet-style CNN with BatchNorm and ``out += identity`` saved
with ``torch.save(state_dict)``; torchvision does not import with this CPU torch, so the ResNet
block is the hand-written one in ``byom_models``).

``test_byom.py`` covers scan, protect, verify, ``load_model``, robust eval and report on the
protected models. Here:

- fine-tune with ``torchshield train``: ``train`` reads numeric tables, so a user fine-tunes their
  model with a factory (``byom_models.*_rows``) that starts from their saved weights and takes a
  row (token ids, or flattened pixels); it writes a signed, encrypted bundle and the split file;
- ``model watermark embed`` + ``verify`` on the fine-tuned bundle (marked: present; unmarked: absent);
- ``privacy audit`` with the split ``train`` recorded, and ``report`` whose privacy section uses it;
- ``torchshield serve`` as a real process on 127.0.0.1 over the protected (encrypted, signed)
  bundles: text for BERT, PNG images for ViT and ResNet, ``/generate`` for GPT-2, each answer
  compared with the user's own model run independently; keys made with ``access create-key``, the
  audit chain checked with ``audit verify``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration
transformers = pytest.importorskip("transformers")

import byom_models as bm  # noqa: E402 - after importorskip
import httpx  # noqa: E402
from serve_harness import free_port, stop_group  # noqa: E402

import torchshield  # noqa: E402
from torchshield.cli.app import run  # noqa: E402

VOCAB_BERT, VOCAB_GPT2 = len(bm.WORDS) + 5, len(bm.WORDS) + 2
DATA = {"bert": "bert.csv", "gpt2": "gpt2.csv", "vit": "images.csv", "resnet": "images.csv"}
SOURCE = {"bert": "bert", "gpt2": "gpt2", "vit": "vit", "resnet": "resnet.pt"}
FACTORY = {"bert": "byom_models:bert_rows", "gpt2": "byom_models:gpt2_rows", "vit": "byom_models:vit_rows",
           "resnet": "byom_models:resnet_rows"}

def cli(capsys, *argv) -> tuple[int, str, str]:
    code = run([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def _tables(root: Path) -> None:
    """What a user fine-tunes on: token-id rows with a label, and flattened 3x16x16 images in [0, 1]."""
    import pandas as pd

    g = np.random.default_rng(0)
    ids = g.integers(5, VOCAB_BERT, (80, 6))  # word ids (after the 5 special tokens)
    pd.DataFrame({**{f"t{i}": ids[:, i] for i in range(6)}, "label": ids[:, 1] % 3}).to_csv(root / "bert.csv",
                                                                                           index=False)
    ids = g.integers(2, VOCAB_GPT2, (80, 7))  # a context of 6 ids and the next one as the label
    pd.DataFrame({**{f"t{i}": ids[:, i] for i in range(6)}, "label": ids[:, 6]}).to_csv(root / "gpt2.csv",
                                                                                       index=False)
    px = pd.DataFrame(g.random((64, 768)).round(3), columns=[f"p{i}" for i in range(768)])
    px["label"] = g.integers(0, 4, 64)
    px.to_csv(root / "images.csv", index=False)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("byom-life")
    # hidden 64: the white-box mark's 32 bits sit in BERT's first Linear (the query projection, one
    # input per hidden unit); at hidden 32 (as many inputs as bits) about half the embeds stop at
    # 27-29 of 32 bits and are refused, at 64 none did in 12 tries
    bm.tiny_bert(root / "bert", hidden_size=64)
    bm.tiny_gpt2(root / "gpt2", extra_words=40)  # 54 token ids: room for the mark's 32 bits in the embedding
    bm.tiny_vit(root / "vit")
    torch.save(bm.trained_resnet(num_classes=4).state_dict(), root / "resnet.pt")
    _tables(root)
    assert run(["keys", "init", "--out", str(root / "shield.key")]) == 0
    assert run(["keys", "signing-init", "--out", str(root / "signer")]) == 0
    return root


def _config(user: Path, name: str) -> Path:
    import yaml

    data = {"path": DATA[name], "label": "label", "normalize": "none"}
    if name == "gpt2":
        data["classes"] = list(range(VOCAB_GPT2))  # label codes are token ids
    if name in ("vit", "resnet"):
        data["bounds"] = [0, 1]
    cfg = {"model": {"type": FACTORY[name], "pretrained": str(user / SOURCE[name])}, "data": data,
           "optimizer": {"name": "adam", "lr": 1e-3}, "epochs": 2, "batch_size": 16, "seed": 0,
           "output": {"bundle": f"{name}-ft.tsb", "key_file": "shield.key", "signing_key": "signer.key"}}
    path = user / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finetuned(user):
    """``torchshield train`` once per model (on first use): the fine-tuned bundle's path."""
    done: dict[str, Path] = {}

    def get(name: str, capsys) -> Path:
        if name not in done:
            code, out, err = cli(capsys, "train", _config(user, name), "--json")
            assert code == 0, err
            done[name] = Path(json.loads(out)["bundle"])
        return done[name]

    return get


def _users_state(user: Path, name: str) -> dict[str, torch.Tensor]:
    """The user's own weights, read with their own library (the reference)."""
    if name == "resnet":
        return torch.load(user / "resnet.pt", weights_only=True)
    auto = {"bert": "AutoModelForSequenceClassification", "gpt2": "AutoModelForCausalLM",
            "vit": "AutoModelForImageClassification"}[name]
    return getattr(transformers, auto).from_pretrained(user / name).state_dict()


def _trained_bits(split: Path) -> np.ndarray:
    doc = json.loads(split.read_text())
    return np.unpackbits(np.frombuffer(base64.b64decode(doc["train"]), np.uint8))[:doc["source"]["rows"]].astype(bool)


@pytest.mark.parametrize("name", list(SOURCE))
def test_finetune_with_train_starts_from_the_users_weights(user, finetuned, capsys, name):
    from torchshield.crypto.keys import read_key_file

    bundle = finetuned(name, capsys)
    info = torchshield.inspect(bundle)
    assert info.encrypted and info.signed
    tensors = torchshield.load(bundle, key=read_key_file(user / "shield.key"), verify_with=user / "signer.pub")
    theirs = _users_state(user, name)
    weights = [k for k in theirs if theirs[k].is_floating_point() and "running_" not in k]  # not BN statistics
    shared = [k for k in weights if f"model.{k}" in tensors]
    assert len(shared) >= 0.9 * len(weights)
    # a fine-tune: 2 epochs of Adam at 1e-3 move each weight a little (random init would be far away)
    moved = [k for k in shared if not torch.equal(tensors[f"model.{k}"], theirs[k])]
    assert moved
    for k in shared:
        assert (tensors[f"model.{k}"] - theirs[k]).abs().max() < 0.05, k
    # the split file: one bit per row of the table, private to the owner
    split = bundle.with_name(bundle.name + ".split.json")
    assert split.stat().st_mode & 0o777 == 0o600
    bits = _trained_bits(split)
    rows = len((user / DATA[name]).read_text().splitlines()) - 1
    assert len(bits) == rows and 0 < bits.sum() < rows


WATERMARK = list(SOURCE)


@pytest.mark.parametrize("name", WATERMARK)
def test_watermark_embed_and_verify(user, finetuned, tmp_path, capsys, name):
    key, signer = user / "shield.key", user / "signer.key"
    bundle = finetuned(name, capsys)
    marked, record = tmp_path / f"{name}-wm.tsb", tmp_path / "mark.json"
    code, out, err = cli(capsys, "model", "watermark", "embed", bundle, "--out", marked, "--key-file", key,
                         "--record", record, "--bits", "32", "--strength", "100", "--lr", "0.01", "--epochs", "10",
                         "--max-accuracy-drop", "1", "--sign", signer, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["method"] == "whitebox" and doc["split"] == str(marked) + ".split.json"
    assert torchshield.inspect(marked).signed
    code, out, err = cli(capsys, "model", "watermark", "verify", marked, "--record", record, "--key-file", key, "--json")
    assert code == 0, err
    assert json.loads(out)["present"]
    code, out, _ = cli(capsys, "model", "watermark", "verify", bundle, "--record", record, "--key-file", key, "--json")
    assert code == 1 and not json.loads(out)["present"]  # the unmarked fine-tune does not carry it
    # the marked model trained on the same rows: its split equals train's
    assert np.array_equal(_trained_bits(Path(doc["split"])), _trained_bits(bundle.with_name(bundle.name +
                                                                                              ".split.json")))


@pytest.mark.parametrize("name", list(SOURCE))
def test_privacy_audit_uses_the_recorded_split(user, finetuned, capsys, name):
    bundle = finetuned(name, capsys)
    code, out, err = cli(capsys, "privacy", "audit", bundle, "--members", user / DATA[name], "--key-file",
                         user / "shield.key", "--verify-with", user / "signer.pub", "--shadows", "2", "--json")
    assert code == 0, err
    doc = json.loads(out)
    bits = _trained_bits(bundle.with_name(bundle.name + ".split.json"))
    assert doc["rows"] == [f"members: the {bits.sum()} rows of {DATA[name]} that trained the model "
                           f"({bundle.name}.split.json)",
                           f"non-members: the {(~bits).sum()} held-out rows of {DATA[name]}"]
    assert {a["attack"] for a in doc["attacks"]} >= {"loss", "lira"}
    assert all(0.0 <= a["auc"] <= 1.0 for a in doc["attacks"])


@pytest.mark.parametrize("name", ["bert", "resnet"])
def test_report_privacy_section_uses_the_recorded_split(user, finetuned, tmp_path, capsys, name):
    """Passing the training file as --train-data and --data (all a user has) must not audit its
    rows against themselves: members and non-members come from the split file."""
    bundle, table = finetuned(name, capsys), user / DATA[name]
    code, out, err = cli(capsys, "report", bundle, "--data", table, "--train-data", table, "--key-file",
                         user / "shield.key", "--pubkey", user / "signer.pub", "--quick",
                         "--only", "model-file,privacy", "--out", tmp_path / "report", "--json")
    assert code in (0, 1), err
    sections = {s["id"]: s for s in json.loads((tmp_path / "report" / "report.json").read_text())["sections"]}
    assert set(sections) == {"model-file", "privacy"}
    bits = _trained_bits(bundle.with_name(bundle.name + ".split.json"))
    m = sections["privacy"]["metrics"]
    assert (m["members"], m["nonmembers"]) == (int(bits.sum()), int((~bits).sum())), m
    assert f"{bundle.name}.split.json" in m["rows"]


# --- torchshield serve, a real process --------------------------------------------------------------

def _png(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def server(user, tmp_path_factory):
    root = tmp_path_factory.mktemp("byom-serve-cli")
    key, signer, pub = user / "shield.key", user / "signer.key", user / "signer.pub"
    extra = {"resnet": ["--factory", "byom_models:resnet_mini", "--arch-option", "num_classes=4",
                        "--input-shape", "3,16,16", "--input-range", "0,1"]}
    bundles = []
    for name, src in SOURCE.items():
        out = root / f"{name}.tsb"
        assert run(["model", "protect", str(user / src), "--out", str(out), "--encrypt", "--key-file", str(key),
                    "--sign", str(signer), *extra.get(name, [])]) == 0
        bundles.append(str(out))
    db = f"sqlite:///{root / 'shield.db'}"
    tokens = {}
    for role in ("predictor", "auditor"):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert run(["access", "create-key", "--role", role, "--db", db, "--key-file", str(key), "--json"]) == 0
        tokens[role] = json.loads(out.getvalue())["token"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "torchshield.cli.app", "serve", *bundles, "--db", db,
                             "--key-file", str(key), "--trust", str(pub), "--port", str(port), "--rate", "1000",
                             "--burst", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode())
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise AssertionError("torchshield serve did not start")
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, tokens, db
    finally:
        stop_group(proc)


def _env() -> dict[str, str]:
    """The server imports this checkout and ``byom_models`` (the ResNet factory the bundle names)."""
    here = [str(Path(torchshield.__file__).parents[1]), str(Path(bm.__file__).parent)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*here, os.environ.get("PYTHONPATH", "")])}


def _post(server, path, body, role="predictor"):
    client, tokens, _ = server
    return client.post(path, json=body, headers={"Authorization": f"Bearer {tokens[role]}"})


def test_serve_bert_text(user, server):
    texts = ["the cat is good", "a bad dog", "secure data token"]
    r = _post(server, "/v1/models/bert/predict", {"text": texts})
    assert r.status_code == 200, r.text
    tok = transformers.AutoTokenizer.from_pretrained(user / "bert")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(user / "bert").eval()
    with torch.no_grad():
        ref = torch.softmax(model(**tok(texts, padding=True, return_tensors="pt")).logits, -1)
    assert r.json()["predictions"] == ref.argmax(-1).tolist()
    labels = model.config.id2label
    top = [row[0] for row in r.json()["outputs"]]  # default output: top-k labels with probabilities
    assert [t["label"] for t in top] == [labels[int(i)] for i in ref.argmax(-1)]
    assert np.allclose([t["p"] for t in top], ref.max(-1).values.numpy(), atol=2e-3)


def test_serve_gpt2_generate(user, server):
    r = _post(server, "/v1/models/gpt2/generate", {"text": "the cat is", "max_new_tokens": 5})
    assert r.status_code == 200, r.text
    tok = transformers.AutoTokenizer.from_pretrained(user / "gpt2")
    model = transformers.AutoModelForCausalLM.from_pretrained(user / "gpt2").eval()
    ids = tok("the cat is", return_tensors="pt").input_ids
    new: list[int] = []
    with torch.no_grad():  # greedy by hand, not through any generate()
        for _ in range(5):
            nxt = int(model(input_ids=torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], 1)).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    assert r.json()["tokens"] == len(new)
    assert r.json()["text"] == tok.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("name", ["vit", "resnet"])
def test_serve_png_images(user, server, name):
    pixels = np.random.default_rng(5).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    r = _post(server, f"/v1/models/{name}/predict", {"images": [_png(p) for p in pixels]})
    assert r.status_code == 200, r.text
    x = torch.from_numpy(pixels.astype(np.float32) / 255).permute(0, 3, 1, 2)
    with torch.no_grad():
        if name == "vit":
            mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
            model = transformers.AutoModelForImageClassification.from_pretrained(user / "vit").eval()
            ref = torch.softmax(model(pixel_values=(x - mean) / std).logits, -1)
        else:
            model = bm.ResNetMini(num_classes=4)
            model.load_state_dict(torch.load(user / "resnet.pt", weights_only=True))
            ref = torch.softmax(model.eval()(x), -1)
    assert r.json()["predictions"] == ref.argmax(-1).tolist()
    assert np.allclose([row[0]["p"] for row in r.json()["outputs"]], ref.max(-1).values.numpy(), atol=2e-3)


def test_serve_refuses_bad_input_and_wrong_roles(server):
    assert _post(server, "/v1/models/bert/predict", {"input_ids": [[2, VOCAB_BERT]]}).status_code == 422
    assert _post(server, "/v1/models/vit/predict", {"images": ["not base64!"]}).status_code == 422
    assert _post(server, "/v1/models/bert/generate", {"text": "the"}).status_code == 404
    assert _post(server, "/v1/models/gpt2/generate", {"text": "the"}, role="auditor").status_code == 403
    client, _, _ = server
    assert client.post("/v1/models/bert/predict", json={"text": ["the"]}).status_code == 401


def test_serve_audit_chain_verifies_with_the_cli(user, server):
    for name in ("bert", "vit"):  # at least these requests are on the chain, whatever ran before
        _post(server, f"/v1/models/{name}/predict", {"text": ["the cat"]} if name == "bert" else
              {"images": [_png(np.zeros((16, 16, 3), np.uint8))]})
    _, _, db = server
    proc = subprocess.run([sys.executable, "-m", "torchshield.cli.app", "audit", "verify", "--db", db, "--key-file",
                           str(user / "shield.key"), "--json"], capture_output=True, text=True, timeout=120,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["records"] >= 2, doc


def test_vit_trigger_mark_is_the_same_in_the_bundle_and_behind_the_server(user, tmp_path, capsys):
    """A ViT with image normalisation (its processor's mean/std): `embed` trains the trigger set on
    the model as the service runs it (pixels in, normalised inside), so the mark verifies in the
    bundle and through a real server alike; without the normalisation the served model would see
    other inputs than the ones the mark was trained on."""
    from serve_harness import running

    from torchshield.crypto.keys import read_key_file
    from torchshield.model.sources.records import preprocessing_of
    from torchshield.serve.http import create_app
    from torchshield.serve.service import ServeConfig, Service

    key, signer, pub = user / "shield.key", user / "signer.key", user / "signer.pub"
    bundle = tmp_path / "vit-src.tsb"
    assert run(["model", "protect", str(user / "vit"), "--out", str(bundle), "--encrypt", "--key-file", str(key),
                "--sign", str(signer)]) == 0
    assert preprocessing_of(torchshield.inspect(bundle).manifest)["normalization"]["std"]  # the case at hand
    (tmp_path / "wm").mkdir()
    marked, record = tmp_path / "wm" / "vit.tsb", tmp_path / "trig.json"
    code, out, err = cli(capsys, "model", "watermark", "embed", bundle, "--out", marked, "--key-file", key,
                         "--record", record, "--method", "trigger",
                         "--data", json.dumps({"path": str(user / DATA["vit"]), "label": "label", "normalize": "none"}),
                         "--triggers", "40", "--epochs", "30", "--lr", "0.003", "--max-accuracy-drop", "1", "--sign", signer, "--json")
    assert code == 0, err
    code, out, err = cli(capsys, "model", "watermark", "verify", marked, "--record", record, "--key-file", key,
                         "--json")
    assert code == 0, err
    local = json.loads(out)
    assert local["present"]
    svc = Service.start(ServeConfig(db_url=f"sqlite:///{tmp_path / 'wm.db'}", bundles=(str(marked),),
                                    trusted_signers=(str(pub),), rate_per_s=1000, burst=1000),
                        master=read_key_file(key))
    token = svc.keys.create(role="predictor").token
    try:
        with running(create_app(svc)) as url:
            code, out, err = cli(capsys, "model", "watermark", "verify", "--endpoint", url, "--model", "vit",
                                 "--api-key", token, "--record", record, "--key-file", key, "--batch-size", "10",
                                 "--json")
    finally:
        svc.close()
    assert code == 0, err
    remote = json.loads(out)
    assert remote["present"] and remote["matches"] == local["matches"]
