"""Serving the models users bring, on a real uvicorn server on 127.0.0.1: a BERT-style text
classifier (``{"text": [...]}`` tokenised server-side with the bundled tokenizer, token ids), a
GPT-2-style causal LM with tied embeddings (``/generate``), a ViT-style image classifier (N x C x H x W
tensors and base64 PNG/JPEG) and a ResNet-style CNN with BatchNorm (``--factory``), each built from a
tiny config with random init, saved as users save them, protected (encrypted + signed) and served
under the usual keys, RBAC and audit. Answers are compared with the user's own model run
independently; every kind of bad input gets a 422 naming the field."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
import torch

pytestmark = pytest.mark.integration
transformers = pytest.importorskip("transformers")

import byom_models as bm  # noqa: E402
from serve_harness import make_signer, running  # noqa: E402

from torchshield.model.loading import protect_model  # noqa: E402

RESNET_ARCH = {"kind": "factory", "target": "byom_models:resnet_mini", "kwargs": {"num_classes": 4}}
IMAGE_SPEC = {"kind": "image", "shape": [3, 16, 16], "dtype": "float32", "min": 0.0, "max": 1.0}


def _dp_fixed() -> torch.nn.Module:
    """A ResNetMini as DP training leaves it: every BatchNorm replaced by GroupNorm (Opacus' rule)."""
    from torchshield.model.sources.fixes import batchnorm_to_groupnorm

    model = bm.trained_resnet(seed=3, num_classes=4)
    fixes = []
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.BatchNorm2d):
            parent, _, attr = name.rpartition(".")
            gn = batchnorm_to_groupnorm(mod)
            torch.nn.init.normal_(gn.weight, 1.0, 0.1, generator=torch.Generator().manual_seed(len(fixes)))
            setattr(model.get_submodule(parent) if parent else model, attr, gn)
            fixes.append(f"{name}: BatchNorm2d -> GroupNorm")
    model.fixes = fixes
    return model.eval()


def _dp_resnet(path, priv):
    import torchshield

    model = _dp_fixed()
    torchshield.save(model, path, sign_with=priv, architecture=RESNET_ARCH,
                     preprocessing={"input": IMAGE_SPEC, "output": {"kind": "logits", "num_classes": 4}},
                     privacy={"model_fixes": model.fixes}, metadata={"name": "resnetdp"})
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app
    from torchshield.serve.service import ServeConfig, Service

    root = tmp_path_factory.mktemp("byom-serve")
    master = generate_master_key()
    priv, pub = make_signer(root)
    bm.tiny_bert(root / "bert")
    bm.tiny_gpt2(root / "gpt2")
    bm.tiny_vit(root / "vit")
    torch.save(bm.trained_resnet(num_classes=4).state_dict(), root / "resnet.pt")
    bundles = []
    for name, src, kw in [
        ("bert", "bert", {}), ("gpt2", "gpt2", {"metadata": {"serve": {"max_new_tokens": 8}}}),
        ("gpt2slow", "gpt2", {"metadata": {"name": "gpt2slow", "serve": {"max_generate_s": 1e-9}}}),
        ("vit", "vit", {"metadata": {"serve": {"max_image_bytes": 4096}}}),
        ("resnet", "resnet.pt", {"architecture": RESNET_ARCH, "input_spec": IMAGE_SPEC}),
    ]:
        out = root / f"{name}.tsb"
        protect_model(root / src, out, key=master, sign_with=priv, **kw)
        bundles.append(str(out))
    bundles.append(str(_dp_resnet(root / "resnetdp.tsb", priv)))
    cfg = ServeConfig(db_url=f"sqlite:///{root / 'serve.db'}", bundles=tuple(bundles), trusted_signers=(str(pub),),
                      output="probabilities", rate_per_s=1000, burst=1000)
    svc = Service.start(cfg, master=master)
    toks = {"predictor": svc.keys.create(role="predictor").token, "auditor": svc.keys.create(role="auditor").token,
            "bert_only": svc.keys.create(role="predictor", models=["bert"]).token}
    with running(create_app(svc)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, toks, root, svc
    svc.close()


def post(served, path, body, who="predictor"):
    client, toks, _, _ = served
    return client.post(path, json=body, headers={"Authorization": f"Bearer {toks[who]}"})


def err(r) -> str:
    e = r.json()["error"]
    return e["message"] if isinstance(e, dict) else str(e)


def _hf(root, name, auto):
    return getattr(transformers, auto).from_pretrained(root / name).eval()


def _probs(logits):
    return torch.softmax(logits.float(), -1)


def test_bert_text_is_tokenised_with_the_bundled_tokenizer(served):
    _, _, root, _ = served
    texts = ["the cat is good", "a bad dog", "secure data"]
    r = post(served, "/v1/models/bert/predict", {"text": texts})
    assert r.status_code == 200, r.text
    tok = transformers.AutoTokenizer.from_pretrained(root / "bert")
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = _probs(_hf(root, "bert", "AutoModelForSequenceClassification")(**enc).logits)
    got = torch.tensor(r.json()["outputs"])
    assert torch.allclose(got, ref, atol=2e-3), (got, ref)
    assert r.json()["predictions"] == ref.argmax(-1).tolist()


def test_concurrent_text_requests_each_get_their_own_answer_and_record(served):
    """Dynamic batching under real concurrency: 24 requests of different lengths from 8 threads
    answer exactly what each answers alone, and each has its own audit record."""
    from concurrent.futures import ThreadPoolExecutor

    client, toks, _, svc = served
    words = ["the", "cat", "is", "good", "a", "bad", "dog", "secure", "data", "model"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(1 + i % 9)) for i in range(24)]
    alone = [post(served, "/v1/models/bert/predict", {"text": [t]}).json() for t in texts]
    before = svc.audit.count()
    queue = svc.registry.get("bert").forwards
    forwards0, requests0 = queue.forwards, queue.requests

    def one(t: str) -> dict:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            r = c.post("/v1/models/bert/predict", json={"text": [t]},
                       headers={"Authorization": f"Bearer {toks['predictor']}"})
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(one, texts))
    for a, b in zip(alone, together, strict=True):
        assert b["predictions"] == a["predictions"]
        torch.testing.assert_close(torch.tensor(b["outputs"]), torch.tensor(a["outputs"]), atol=2e-3, rtol=0)
    assert svc.audit.count() == before + len(texts)
    assert queue.requests - requests0 == len(texts) and 1 <= queue.forwards - forwards0 <= len(texts)


def test_bert_token_ids_and_their_bad_forms(served):
    _, _, root, _ = served
    ok = post(served, "/v1/models/bert/predict", {"input_ids": [[2, 5, 6, 3], [2, 0, 3]]})
    assert ok.status_code == 200, ok.text
    assert post(served, "/v1/models/bert/predict", {"input_ids": [[2, 0, 3]]}).status_code == 200  # id 0 is valid
    vocab = len(bm.WORDS) + 5
    for body, field in [({"input_ids": [[2, vocab]]}, "input_ids[0][1]"), ({"input_ids": [[2, -1]]}, "input_ids[0][1]"),
                        ({"input_ids": [[2, 5.5]]}, "input_ids[0][1]"), ({"input_ids": [[True]]}, "input_ids[0][0]"),
                        ({"input_ids": [[1] * 33]}, "input_ids[0]"), ({"text": ["ok", 7]}, "text[1]"),
                        ({"text": ["the " * 40]}, "text[0]"), ({"text": []}, "text"),
                        ({"pixels": [[1]]}, "pixels"), ({"text": ["a"], "input_ids": [[1]]}, "exactly one field")]:
        r = post(served, "/v1/models/bert/predict", body)
        assert r.status_code == 422, (body, r.text)
        assert field in err(r), (body, r.text)


def test_gpt2_generate_matches_greedy_decoding_of_the_users_model(served):
    _, _, root, _ = served
    r = post(served, "/v1/models/gpt2/generate", {"text": "the cat is", "max_new_tokens": 6})
    assert r.status_code == 200, r.text
    tok = transformers.AutoTokenizer.from_pretrained(root / "gpt2")
    ids = tok("the cat is", return_tensors="pt").input_ids
    model = _hf(root, "gpt2", "AutoModelForCausalLM")
    new = []
    with torch.no_grad():  # greedy, by hand: the reference does not share our loop
        for _ in range(6):
            nxt = int(model(input_ids=torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], 1)
                            if new else ids).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    body = r.json()
    assert body["tokens"] == len(new)
    assert body["text"] == tok.decode(new, skip_special_tokens=True)
    assert model.lm_head.weight is model.transformer.wte.weight  # the user's model: tied, and so is ours
    served_model = served[3].registry.get("gpt2").module
    assert served_model.lm_head.weight is served_model.transformer.wte.weight


def test_generate_is_bounded(served):
    r = post(served, "/v1/models/gpt2/generate", {"text": "the cat", "max_new_tokens": 9})  # the bundle caps at 8
    assert r.status_code == 422 and "max_new_tokens" in err(r)
    r = post(served, "/v1/models/gpt2/generate", {"text": "the cat", "max_new_tokens": 5000})
    assert r.status_code == 422 and "max_new_tokens" in err(r)
    long_prompt = " ".join(["cat"] * 31)  # 31 of 32 positions: one token of room
    r = post(served, "/v1/models/gpt2/generate", {"text": long_prompt, "max_new_tokens": 8})
    assert r.status_code == 200 and r.json()["tokens"] <= 1 and r.json()["stopped"] in ("length", "eos")
    r = post(served, "/v1/models/gpt2/generate", {"text": " ".join(["cat"] * 40), "max_new_tokens": 2})
    assert r.status_code == 422 and "text" in err(r)
    r = post(served, "/v1/models/gpt2slow/generate", {"text": "the cat", "max_new_tokens": 20})
    assert r.status_code == 200 and r.json()["stopped"] == "time" and r.json()["tokens"] == 1
    assert post(served, "/v1/models/bert/generate", {"text": "the cat"}).status_code == 404
    assert post(served, "/v1/models/gpt2/generate", {"text": "x", "temperature": 2}).status_code == 422
    assert post(served, "/v1/models/gpt2/generate", {"text": "the"}, who="auditor").status_code == 403
    assert post(served, "/v1/models/gpt2/generate", {"text": "the"}, who="bert_only").status_code == 403


def _png(arr) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_vit_tensors_and_png_images_match_the_users_model(served):
    import numpy as np

    _, _, root, _ = served
    g = np.random.default_rng(0)
    pixels = g.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(pixels.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    r_t = post(served, "/v1/models/vit/predict", {"inputs": x.tolist()})
    r_i = post(served, "/v1/models/vit/predict", {"images": [_png(p) for p in pixels]})
    assert r_t.status_code == 200 and r_i.status_code == 200, (r_t.text, r_i.text)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = _probs(_hf(root, "vit", "AutoModelForImageClassification")(pixel_values=(x - mean) / std).logits)
    assert torch.allclose(torch.tensor(r_t.json()["outputs"]), ref, atol=2e-3)
    assert r_i.json()["outputs"] == r_t.json()["outputs"]  # lossless PNG: the same pixels


def test_images_bad_forms(served):
    import numpy as np
    from PIL import Image

    small = np.zeros((8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, "JPEG")
    assert post(served, "/v1/models/vit/predict", {"images": [base64.b64encode(buf.getvalue()).decode()]}
                ).status_code == 200  # JPEG, any size: resized to the model's 16 x 16
    gif = io.BytesIO()
    Image.fromarray(small).save(gif, "GIF")
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, "PNG", optimize=True)  # 25 Mpixel declared, ~3 KB on the wire
    assert len(bomb.getvalue()) < 4096
    noisy = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # > 4096 bytes encoded
    cases = [
        ({"images": ["not base64!"]}, "images[0]", "base64"),
        ({"images": [base64.b64encode(gif.getvalue()).decode()]}, "images[0]", "PNG or JPEG"),
        ({"images": [base64.b64encode(b"\x89PNG\r\n\x1a\n garbage").decode()]}, "images[0]", "PNG or JPEG"),
        ({"images": [base64.b64encode(bomb.getvalue()).decode()]}, "images[0]", "decompression bomb"),
        ({"images": [_png(noisy)]}, "images[0]", "larger than 4096 bytes"),
        ({"images": [3]}, "images[0]", "base64"),
        ({"inputs": torch.rand(1, 16, 16, 3).tolist()}, "inputs", "shape [3, 16, 16]"),
        ({"inputs": (torch.rand(1, 3, 16, 16) + 1.5).tolist()}, "inputs", "<= 1.0"),
        ({"inputs": [[["a"]]]}, "inputs", "numbers"),
    ]
    for body, field, what in cases:
        r = post(served, "/v1/models/vit/predict", body)
        assert r.status_code == 422, (field, what, r.text)
        assert field in err(r) and what in err(r), r.text


def test_resnet_with_batchnorm_from_a_state_dict(served):
    _, _, root, _ = served
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    r = post(served, "/v1/models/resnet/predict", {"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    model = bm.ResNetMini(num_classes=4)
    model.load_state_dict(torch.load(root / "resnet.pt", weights_only=True))
    with torch.no_grad():
        ref = _probs(model.eval()(x))
    assert torch.allclose(torch.tensor(r.json()["outputs"]), ref, atol=2e-3)


def test_each_request_is_audited_and_the_chain_verifies(served):
    _, _, _, svc = served
    # its own requests: xdist may run this test on a worker where the others of the module did not run
    assert post(served, "/v1/models/bert/predict", {"text": ["the cat"]}).status_code == 200
    assert post(served, "/v1/models/gpt2/generate", {"text": "the cat", "max_new_tokens": 2}).status_code == 200
    recs = svc.audit.records(limit=1000)
    routes = {r["route"] for r in recs}
    assert {"/v1/models/{name}/predict", "/v1/models/{name}/generate"} <= routes
    gen = [r for r in recs if r["route"] == "/v1/models/{name}/generate" and r["status"] == 200]
    assert gen and all("tokens" in r["detail"] for r in gen)
    assert svc.audit.verify().ok


def test_dp_trained_resnet_is_served_with_its_recorded_groupnorm_fix(served):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    r = post(served, "/v1/models/resnetdp/predict", {"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    with torch.no_grad():
        ref = _probs(_dp_fixed()(x))
    assert torch.allclose(torch.tensor(r.json()["outputs"]), ref, atol=2e-3)
    module = served[3].registry.get("resnetdp").module
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
