"""Hugging Face directories as users save them (sharded safetensors, tokenizer, image processor)
-> one bundle -> the ready module, and back to a directory ``from_pretrained`` reads.

References are computed independently: transformers' own ``from_pretrained`` on the user's
directory. Outputs are compared bit for bit with every parameter in fresh memory on both sides,
because CPU BLAS picks kernels by pointer alignment (a safetensors mmap is not 64-byte aligned;
a bundle is), which changes the last bits of a 1-row matmul without any weight differing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import byom_models as bm

from torchshield.crypto.keys import MasterKey
from torchshield.errors import FormatError, InputError, MissingDependencyError, UnsafeFileError
from torchshield.model.bundle import inspect, load
from torchshield.model.loading import export_hf, load_model, open_model, protect_model

KEY = MasterKey(bytes(range(32)))
IDS = torch.tensor([[2, 5, 6, 7, 3], [2, 9, 10, 3, 0]])


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"bert": bm.tiny_bert(root / "bert"), "gpt2": bm.tiny_gpt2(root / "gpt2"), "vit": bm.tiny_vit(root / "vit")}


def _auto(name):
    import transformers

    return {"bert": transformers.AutoModelForSequenceClassification, "gpt2": transformers.AutoModelForCausalLM,
            "vit": transformers.AutoModelForImageClassification}[name]


def _inputs(name):
    if name == "vit":
        return {"pixel_values": torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))}
    return {"input_ids": IDS, "attention_mask": (IDS != 0).long()}


def _logits(model, x):
    for p in model.parameters():
        p.data = p.data.clone()  # same allocator alignment on both sides (see module docstring)
    with torch.no_grad():
        return model.eval()(**x).logits


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_sharded_directory_round_trip_is_bit_exact(hf_dirs, tmp_path, name):
    src = hf_dirs[name]
    assert (src / "model.safetensors.index.json").is_file() and len(list(src.glob("*.safetensors"))) > 2
    report = protect_model(src, tmp_path / "m.tsb", key=KEY)
    ref = _auto(name).from_pretrained(src)
    model = load_model(tmp_path / "m.tsb", key=KEY)
    assert type(model) is type(ref)
    ref_sd, sd = ref.state_dict(), model.state_dict()
    assert sd.keys() == ref_sd.keys() and all(torch.equal(sd[k], ref_sd[k]) for k in sd)
    assert torch.equal(_logits(model, _inputs(name)), _logits(ref, _inputs(name)))
    assert set(report.read) >= {p.name for p in src.glob("*.safetensors")}


def test_tied_embeddings_stored_once_and_retied(hf_dirs, tmp_path):
    protect_model(hf_dirs["gpt2"], tmp_path / "g.tsb")
    info = inspect(tmp_path / "g.tsb")
    assert info.manifest["aliases"] == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in info.tensors  # stored once
    wte = info.tensors["transformer.wte.weight"]["shape"]
    stored = sum(torch.Size(e["shape"]).numel() for e in info.tensors.values())
    model = load_model(tmp_path / "g.tsb")
    assert stored == sum(p.numel() for p in model.parameters())  # parameters() counts a tied weight once
    assert model.lm_head.weight is model.transformer.wte.weight and list(model.lm_head.weight.shape) == wte
    tensors = load(tmp_path / "g.tsb")  # the tensor API re-ties too: one tensor under both names
    assert tensors["lm_head.weight"] is tensors["transformer.wte.weight"]


def test_torch_save_state_dict_with_tied_weights_is_deduplicated(hf_dirs, tmp_path):
    ref = _auto("gpt2").from_pretrained(hf_dirs["gpt2"])
    torch.save(ref.state_dict(), tmp_path / "gpt2.pt")  # torch.save keeps the sharing
    protect_model(tmp_path / "gpt2.pt", tmp_path / "g.tsb")
    info = inspect(tmp_path / "g.tsb")
    assert info.manifest["aliases"] == {"lm_head.weight": "transformer.wte.weight"}
    plain = load(tmp_path / "g.tsb")
    assert plain.keys() == ref.state_dict().keys()


def test_preprocessing_input_spec_and_files(hf_dirs, tmp_path):
    protect_model(hf_dirs["bert"], tmp_path / "b.tsb", key=KEY)
    pre = inspect(tmp_path / "b.tsb").manifest["preprocessing"]
    config = json.loads((hf_dirs["bert"] / "config.json").read_text())
    assert pre["input"] == {"kind": "tokens", "names": ["input_ids", "attention_mask"], "dtype": "int64",
                            "min": 0, "max": config["vocab_size"] - 1, "max_length": 32}
    assert pre["output"] == {"kind": "logits", "num_classes": 3, "labels": ["neg", "neu", "pos"]}
    loaded = open_model(tmp_path / "b.tsb", key=KEY)
    for fname in ("tokenizer.json", "tokenizer_config.json"):
        assert loaded.files[fname] == (hf_dirs["bert"] / fname).read_bytes()
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(loaded.files["tokenizer.json"].decode()))
    ids = tok("the model is secure")["input_ids"]
    assert ids == [2, 5 + bm.WORDS.index("the"), 5 + bm.WORDS.index("model"), 5 + bm.WORDS.index("is"),
                   5 + bm.WORDS.index("secure"), 3]
    assert all(0 <= i <= pre["input"]["max"] for i in ids)

    protect_model(hf_dirs["vit"], tmp_path / "v.tsb")
    pre = inspect(tmp_path / "v.tsb").manifest["preprocessing"]
    assert pre["input"]["shape"] == [3, 16, 16] and (pre["input"]["min"], pre["input"]["max"]) == (0.0, 1.0)
    assert pre["normalization"]["mean"] == pytest.approx([0.5, 0.4, 0.3])
    assert pre["normalization"]["std"] == pytest.approx([0.2, 0.25, 0.3])


def test_files_are_encrypted_with_the_weights(hf_dirs, tmp_path):
    protect_model(hf_dirs["bert"], tmp_path / "b.tsb", key=KEY)
    raw = (tmp_path / "b.tsb").read_bytes()
    vocab_word = b'"secure"'
    assert vocab_word in (hf_dirs["bert"] / "tokenizer.json").read_bytes() and vocab_word not in raw


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_export_hf_reads_back_with_from_pretrained_bit_identical(hf_dirs, tmp_path, name):
    protect_model(hf_dirs[name], tmp_path / "m.tsb", key=KEY)
    names = export_hf(tmp_path / "m.tsb", tmp_path / "out", key=KEY)
    assert "config.json" in names and "model.safetensors" in names
    back = _auto(name).from_pretrained(tmp_path / "out")
    ref = _auto(name).from_pretrained(hf_dirs[name])
    assert torch.equal(_logits(back, _inputs(name)), _logits(ref, _inputs(name)))
    for fname in ("tokenizer.json", "preprocessor_config.json"):
        if (hf_dirs[name] / fname).exists():
            assert (tmp_path / "out" / fname).read_bytes() == (hf_dirs[name] / fname).read_bytes()
    with pytest.raises(InputError, match="already exists"):
        export_hf(tmp_path / "m.tsb", tmp_path / "out", key=KEY)


def test_export_hf_refuses_a_non_hf_bundle(tmp_path):
    torch.save(bm.trained_resnet().state_dict(), tmp_path / "r.pt")
    protect_model(tmp_path / "r.pt", tmp_path / "r.tsb",
                  architecture={"kind": "factory", "target": "byom_models:resnet_mini", "kwargs": {}})
    with pytest.raises(InputError, match="not a Hugging Face one"):
        export_hf(tmp_path / "r.tsb", tmp_path / "out", verify_with=None)
    assert not (tmp_path / "out").exists()


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_directories_are_refused_naming_the_file(hf_dirs, tmp_path):
    d = _copy(hf_dirs["bert"], tmp_path / "missing")
    shard = sorted(d.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(InputError, match=shard.name):
        protect_model(d, tmp_path / "x.tsb")

    d = _copy(hf_dirs["bert"], tmp_path / "escape")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../outside.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match="not a file in the same directory"):
        protect_model(d, tmp_path / "x.tsb")

    d = _copy(hf_dirs["bert"], tmp_path / "remote")
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="custom model code"):
        protect_model(d, tmp_path / "x.tsb")

    d = _copy(hf_dirs["vit"], tmp_path / "wrongcfg")
    config = json.loads((d / "config.json").read_text())
    config["hidden_size"] = 48
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError, match="do not fit"):
        protect_model(d, tmp_path / "x.tsb")
    assert not (tmp_path / "x.tsb").exists()


def test_unsafe_pytorch_shard_is_refused_before_loading(hf_dirs, tmp_path):
    """A sharded .bin directory: every shard is scanned; a pickle that runs code stops protect."""
    import pickle

    d = tmp_path / "bin"
    d.mkdir()
    (d / "config.json").write_bytes((hf_dirs["bert"] / "config.json").read_bytes())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (d / "pytorch_model-00001-of-00001.bin").write_bytes(pickle.dumps({"x": Evil()}))
    (d / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"bert.pooler.dense.bias": "pytorch_model-00001-of-00001.bin"}}))
    with pytest.raises(UnsafeFileError, match="pytorch_model-00001-of-00001.bin"):
        protect_model(d, tmp_path / "x.tsb")


def test_missing_transformers_names_the_install_line(hf_dirs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(MissingDependencyError) as err:
        protect_model(hf_dirs["bert"], tmp_path / "x.tsb")
    assert "pip install 'torchshield[hf]'" in str(err.value) and err.value.exit_code == 2


def test_pytorch_model_bin_directory(hf_dirs, tmp_path):
    """Older directories hold pytorch_model.bin (a torch pickle): scanned, then read weights-only."""
    ref = _auto("vit").from_pretrained(hf_dirs["vit"])
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (d / name).write_bytes((hf_dirs["vit"] / name).read_bytes())
    torch.save(ref.state_dict(), d / "pytorch_model.bin")
    report = protect_model(d, tmp_path / "v.tsb")
    assert "pytorch_model.bin" in report.read
    model = load_model(tmp_path / "v.tsb")
    assert torch.equal(_logits(model, _inputs("vit")), _logits(ref, _inputs("vit")))


def test_reprotecting_a_bundle_keeps_what_it_carries(hf_dirs, tmp_path, master_key):
    """Encrypting an unencrypted bundle (or re-keying one) keeps architecture, preprocessing,
    tied tensors and files: the new bundle loads to the same model."""
    protect_model(hf_dirs["gpt2"], tmp_path / "plain.tsb")
    protect_model(tmp_path / "plain.tsb", tmp_path / "enc.tsb", key=master_key)
    a, b = inspect(tmp_path / "plain.tsb").manifest, inspect(tmp_path / "enc.tsb").manifest
    for field in ("architecture", "preprocessing", "aliases", "files"):
        assert a[field] == b[field], field
    model = load_model(tmp_path / "enc.tsb", key=master_key)
    ref = _auto("gpt2").from_pretrained(hf_dirs["gpt2"])
    assert torch.equal(_logits(model, _inputs("gpt2")), _logits(ref, _inputs("gpt2")))
