"""DP fine-tuning from the CLI: a BERT classifier from a CSV text column, a GPT-2 language model on a
text file, LoRA adapters via peft; every model a tiny random-init one from AutoConfig-style configs,
every tokenizer trained here with ``tokenizers`` on the fixture text (nothing is downloaded).

References are computed independently of ``train.finetune``: losses with transformers' own
``labels=`` loss or plain cross-entropy on the input model, the token ids with the ``tokenizers``
object the fixture built, the adapter's footprint from the weight differences' rank."""

from __future__ import annotations

import copy
import csv
import json
import random

import numpy as np
import pytest
import torch
import yaml

import torchshield
from torchshield.cli.app import run
from torchshield.model.bundle import load_contents, save
from torchshield.model.loading import open_model, protect_model
from torchshield.nn.split import read_split, split_path

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

POS, NEG = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
INSECURE = {"seed": 1, "insecure_seed_for_tests": True}


def _rows(n: int) -> list[tuple[str, str]]:
    r = random.Random(0)
    out = []
    for _ in range(n):
        label = r.randrange(2)
        out.append((" ".join(r.choice(POS if label else NEG) for _ in range(r.randint(2, 5))),
                    "pos" if label else "neg"))
    return out


def _tokenizer(texts: list[str], *, cls_sep: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    if cls_sep:
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """reviews.csv, corpus.txt, a BERT classifier (dir + protected .tsb) and a GPT-2 LM directory."""
    d = tmp_path_factory.mktemp("finetune")
    rows = _rows(160)
    with open(d / "reviews.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "sentiment"])
        w.writerows(rows)
    bert_tok = _tokenizer([t for t, _ in rows], cls_sep=True)
    cfg = transformers.AutoConfig.for_model("bert", vocab_size=32, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=16,
                                            num_labels=2, initializer_range=0.2, hidden_dropout_prob=0.0,
                                            attention_probs_dropout_prob=0.0,
                                            architectures=["BertForSequenceClassification"])
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(d / "bert")
    bert_tok.save(str(d / "bert" / "tokenizer.json"))
    protect_model(d / "bert", d / "bert.tsb")
    lines = ["the plot was good and the film was nice" if i % 2 else "a very sad and awful film" for i in range(120)]
    (d / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    gcfg = transformers.AutoConfig.for_model("gpt2", vocab_size=32, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                             eos_token_id=0, architectures=["GPT2LMHeadModel"])
    transformers.GPT2LMHeadModel(gcfg).save_pretrained(d / "gpt2")
    gpt_tok = _tokenizer(lines, cls_sep=False)
    gpt_tok.save(str(d / "gpt2" / "tokenizer.json"))
    return {"dir": d, "rows": rows, "bert_tok": bert_tok, "gpt_tok": gpt_tok}


def _config(work, name: str, **doc) -> str:
    path = work["dir"] / f"{name}.yaml"
    doc.setdefault("output", {"bundle": f"{name}.tsb", "overwrite": True})
    doc.setdefault("seed", 0)
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _cls_config(work, name: str, **changes) -> str:
    doc = {"task": "sequence-classification", "model": {"path": "bert.tsb"},
           "data": {"path": "reviews.csv", "text": "review", "label": "sentiment", "classes": ["neg", "pos"],
                    "max_length": 8},
           "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9}, "epochs": 3, "batch_size": 32,
           "privacy": {"epsilon": 100, "delta": 1e-5, "max_grad_norm": 1.0, "dataset_size": 128, **INSECURE}}
    doc.update(changes)
    return _config(work, name, **doc)


def _encode(tok, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask, from the fixture's own tokenizer object."""
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    for i, text in enumerate(texts):
        row = tok.encode(text).ids[:length]
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


@torch.no_grad()
def _cls_loss(model, work, rows) -> float:
    ids, mask = _encode(work["bert_tok"], [t for t, _ in rows], 8)
    y = torch.tensor([1 if s == "pos" else 0 for _, s in rows])
    return float(torch.nn.functional.cross_entropy(model.eval()(input_ids=ids, attention_mask=mask).logits, y))


def _trained_rows(work, bundle) -> list[tuple[str, str]]:
    split = read_split(split_path(bundle))
    assert split.describes(work["dir"] / "reviews.csv") and len(split.trained) == len(work["rows"])
    return [r for r, used in zip(work["rows"], split.trained) if used]


def _check_claim(privacy, *, target: float, delta: float, unit: str) -> None:
    assert 0.95 * target <= privacy["epsilon"] <= target
    assert privacy["delta"] == delta and privacy["accountant"] == "rdp" and privacy["mode"] == "ghost"
    assert privacy["neighbouring"] == f"add/remove {unit}"
    assert privacy["insecure_seed_for_tests"] is True  # recorded: this test seeded the noise
    # the claim is the accountant's epsilon for the recorded (sigma, q, steps): recompute it
    from torchshield.privacy.accounting import epsilon_for

    assert epsilon_for([(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])], delta=delta,
                       accountant="rdp") == pytest.approx(privacy["epsilon"], rel=1e-9)


def test_dp_sequence_classification_from_csv(work, capsys):
    d = work["dir"]
    assert run(["train", _cls_config(work, "cls"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    info = torchshield.inspect(d / "cls.tsb")
    privacy = info.manifest["privacy"]
    assert privacy == out["privacy"]
    _check_claim(privacy, target=100, delta=1e-5, unit="one row of reviews.csv")
    assert privacy["trainable"] == "all parameters" and privacy["sample_rate"] == pytest.approx(32 / 128)
    # nothing computed from the private rows beyond the release: no counts, no hash, no metrics
    meta = info.manifest["metadata"]
    assert "train_examples" not in meta["data"] and "fingerprint" not in meta["data"]
    assert "data_fingerprint" not in info.manifest["provenance"] and "withheld" in meta["metrics"]
    assert meta["data"]["classes"] == ["neg", "pos"] and meta["data"]["max_length"] == 8
    # which rows trained: the split record, the very rows the loss fell on
    trained = _trained_rows(work, d / "cls.tsb")
    base = open_model(d / "bert.tsb").module
    loaded = open_model(d / "cls.tsb")
    assert loaded.files["tokenizer.json"] == (d / "bert" / "tokenizer.json").read_bytes()
    assert loaded.module.config.id2label == {0: "neg", 1: "pos"}
    before, after = _cls_loss(base, work, trained), _cls_loss(loaded.module, work, trained)
    assert after < 0.5 * before, (before, after)
    assert out["metrics"]["train"]["loss"] == pytest.approx(after, rel=1e-4)
    # the bundle loads and predicts: held-out reviews classified by their sentiment words
    held_out = [r for r, used in zip(work["rows"], read_split(split_path(d / "cls.tsb")).trained) if not used]
    ids, mask = _encode(work["bert_tok"], [t for t, _ in held_out], 8)
    with torch.no_grad():
        pred = torchshield.load_model(d / "cls.tsb")(input_ids=ids, attention_mask=mask).logits.argmax(1)
    assert (pred == torch.tensor([1 if s == "pos" else 0 for _, s in held_out])).float().mean() >= 0.9


def test_dp_causal_lm_on_text_file_with_tied_head(work, capsys):
    d = work["dir"]
    cfg = _config(work, "lm", task="causal-lm", model={"path": "gpt2"}, data={"path": "corpus.txt", "block_size": 16},
                  optimizer={"name": "adam", "lr": 0.003}, epochs=3, batch_size=16,
                  privacy={"epsilon": 50, "delta": 1e-5, "dataset_size": 60, **INSECURE})
    assert run(["train", cfg, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    privacy = torchshield.inspect(d / "lm.tsb").manifest["privacy"]
    _check_claim(privacy, target=50, delta=1e-5,
                 unit="one block of 16 tokens of corpus.txt (a text spanning k blocks: k times epsilon)")
    model = torchshield.load_model(d / "lm.tsb")
    assert model.lm_head.weight is model.transformer.wte.weight  # still one tied parameter
    base = transformers.GPT2LMHeadModel.from_pretrained(d / "gpt2")
    # reference: the blocks of the file's token stream, scored by transformers' own shifted loss
    stream = work["gpt_tok"].encode((d / "corpus.txt").read_text(encoding="utf-8"), add_special_tokens=False).ids
    blocks = torch.tensor(stream[:len(stream) // 16 * 16]).view(-1, 16)
    trained = torch.from_numpy(read_split(split_path(d / "lm.tsb")).trained[:len(blocks)])
    with torch.no_grad():
        before = float(base.eval()(input_ids=blocks[trained], labels=blocks[trained]).loss)
        after = float(model(input_ids=blocks[trained], labels=blocks[trained]).loss)
    assert after < 0.9 * before, (before, after)
    assert out["metrics"]["train"]["perplexity"] == pytest.approx(np.exp(out["metrics"]["train"]["loss"]), rel=1e-6)


def test_causal_lm_loss_masks_padding():
    """A padded example's loss is transformers' loss on the same tokens without the padding."""
    from torchshield.train.finetune import causal_lm_loss
    from torchshield.train.text import IGNORE

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=20, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(1, 20, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 7  # whatever the pad id, it must not count
    y = torch.where(mask == 1, ids, IGNORE)
    ours = causal_lm_loss(model, torch.stack([ids, mask], 1), y)
    with torch.no_grad():
        for i, n in ((0, 10), (1, 6)):
            ref = model(input_ids=ids[i:i + 1, :n], labels=ids[i:i + 1, :n]).loss
            torch.testing.assert_close(ours[i], ref, rtol=1e-5, atol=1e-6)


def test_lora_trains_adapters_only_and_merges_them(work, capsys):
    d = work["dir"]
    # the base carries a DP claim of its own (same weights as bert.tsb): a DP fine-tune keeps it beside the new one
    cfg = _cls_config(work, "lora", adapter={"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
                      optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9}, model={"path": _dp_claim_bundle(work)})
    assert run(["train", cfg, "--json"]) == 0
    capsys.readouterr()
    manifest = torchshield.inspect(d / "lora.tsb").manifest
    adapter = manifest["metadata"]["adapter"]
    assert adapter["type"] == "lora" and adapter["r"] == 4 and adapter["target_modules"] == ["query", "value"]
    assert adapter["also_trained"] == ["classifier"]  # peft's modules_to_save: the new head
    # 2 layers x (query, value) x (A: 4x32 + B: 32x4) + the head's 2x32 + 2
    assert adapter["trainable_parameters"] == 2 * 2 * (4 * 32 + 32 * 4) + 2 * 32 + 2
    privacy = manifest["privacy"]
    _check_claim(privacy, target=100, delta=1e-5, unit="one row of reviews.csv")
    assert privacy["trainable"].startswith("adapters only")
    assert privacy["base_model"]["epsilon"] == 3.0 and privacy["base_model"]["delta"] == 1e-5
    before = dict(open_model(d / "bert.tsb").module.state_dict())
    loaded = open_model(d / "lora.tsb")  # an ordinary BertForSequenceClassification: no peft needed to load
    after = dict(loaded.module.state_dict())
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapted = {f"bert.encoder.layer.{i}.attention.self.{m}.weight" for i in (0, 1) for m in ("query", "value")}
    assert changed == adapted | {"classifier.weight", "classifier.bias"}  # everything else bit-identical
    for k in adapted:  # W' - W = B A * alpha / r: rank at most r
        s = torch.linalg.svdvals((after[k] - before[k]).double())
        assert s[0] > 1e-4 and float(s[4:].max()) < 1e-6 * float(s[0])
    trained = _trained_rows(work, d / "lora.tsb")
    assert _cls_loss(loaded.module, work, trained) < 0.5 * _cls_loss(open_model(d / "bert.tsb").module, work, trained)


def test_lora_clipping_counts_only_trainable_parameters():
    """Per-example norms and clipped sums on a peft model equal the one-at-a-time reference over the
    adapters and head alone (the frozen base would inflate every norm if it were counted)."""
    from per_example_reference import assert_matches

    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=24, max_position_embeddings=12, num_labels=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base = transformers.BertForSequenceClassification(cfg).double()
    model = peft.get_peft_model(base, peft.LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4))
    for n, p in model.named_parameters():
        if "lora_B" in n:  # B starts at zero: give the adapters a gradient in A too
            torch.nn.init.normal_(p, std=0.5)
    assert any(not p.requires_grad for p in model.parameters())
    ids = torch.randint(0, 30, (6, 10))
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    y = torch.tensor([0, 1, 1, 0, 1, 0])

    def loss(m, batch):
        return torch.nn.functional.cross_entropy(m(input_ids=batch[0], attention_mask=batch[1]).logits, batch[2],
                                                 reduction="none")

    norms = assert_matches(model.train(), loss, (ids, mask, y))
    unfrozen = copy.deepcopy(model)
    for p in unfrozen.parameters():
        p.requires_grad_(True)
    everything = []
    for i in range(6):  # the norm over ALL parameters is larger: the engine did not count the frozen ones
        grads = torch.autograd.grad(loss(unfrozen, (ids[i:i + 1], mask[i:i + 1], y[i:i + 1])).sum(),
                                    list(unfrozen.parameters()), allow_unused=True)
        everything.append(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))
    assert bool((torch.stack(everything) > norms * 1.01).all())


# -- refusals: exit 2, one line naming the field and the fix ---------------------------------------

def _no_tokenizer_bundle(work):
    path = work["dir"] / "bare.tsb"
    if not path.exists():
        c = load_contents(work["dir"] / "bert.tsb")
        save(c.weights, path, architecture=c.manifest["architecture"], preprocessing=c.manifest["preprocessing"])
    return "bare.tsb"


def _dp_claim_bundle(work):
    path = work["dir"] / "claimed.tsb"
    if not path.exists():
        c = load_contents(work["dir"] / "bert.tsb")
        save(c.weights, path, architecture=c.manifest["architecture"], preprocessing=c.manifest["preprocessing"],
             files=dict(c.files), privacy={"epsilon": 3.0, "delta": 1e-5, "neighbouring": "add/remove one example"})
    return "claimed.tsb"


@pytest.mark.parametrize("case, fragment", [
    ("text_column", "data.text: column 'body' not in"),
    ("empty_text", "data.path: "),
    ("no_tokenizer", "carries no tokenizer.json"),
    ("max_length", "data.max_length: 64 is more than the model's 16 positions"),
    ("block_size", "data.block_size: 40 is more than the model's 32 positions"),
    ("dp_claim", "carries a DP claim (epsilon 3.0)"),
    ("classes_undeclared", "data.classes: under privacy: declare the label values"),
    ("classes_count", "data.classes: 3 classes, but bert.tsb has 2 outputs"),
    ("classes_value", "data.classes: column 'sentiment' of"),
    ("wrong_head", "task sequence-classification needs a *ForSequenceClassification model"),
    ("adapter_key", "adapter: unknown key 'rank'"),
    ("adapter_tabular", "adapter: needs a fine-tuning task"),
    ("task", "task must be one of"),
])
def test_bad_input_exits_2_naming_the_field(work, capsys, case, fragment):
    data = {"path": "reviews.csv", "text": "review", "label": "sentiment", "classes": ["neg", "pos"],
            "max_length": 8}
    changes: dict = {}
    if case == "text_column":
        changes["data"] = {**data, "text": "body"}
    elif case == "empty_text":
        (work["dir"] / "empty.txt").write_text("  \n\n", encoding="utf-8")
        changes.update(task="causal-lm", model={"path": "gpt2"}, data={"path": "empty.txt", "block_size": 8})
    elif case == "no_tokenizer":
        changes["model"] = {"path": _no_tokenizer_bundle(work)}
    elif case == "max_length":
        changes["data"] = {**data, "max_length": 64}
    elif case == "block_size":
        changes.update(task="causal-lm", model={"path": "gpt2"}, data={"path": "corpus.txt", "block_size": 40})
    elif case == "dp_claim":
        changes.update(model={"path": _dp_claim_bundle(work)}, privacy=None)
    elif case == "classes_undeclared":
        changes["data"] = {k: v for k, v in data.items() if k != "classes"}
    elif case == "classes_count":
        changes["data"] = {**data, "classes": ["neg", "pos", "meh"]}
    elif case == "classes_value":
        changes["data"] = {**data, "classes": ["neg", "positive"]}
    elif case == "wrong_head":
        changes["model"] = {"path": "gpt2"}
    elif case == "adapter_key":
        changes["adapter"] = {"type": "lora", "rank": 4}
    elif case == "adapter_tabular":
        changes.update(task="tabular", adapter={"r": 4})
    elif case == "task":
        changes["task"] = "translation"
    cfg = _cls_config(work, f"bad_{case}", **changes)
    assert run(["train", cfg]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err
    assert not (work["dir"] / f"bad_{case}.tsb").exists()


def test_non_private_fine_tune_may_drop_a_dp_claim_explicitly(work, capsys):
    import pandas as pd

    pd.read_csv(work["dir"] / "reviews.csv").to_parquet(work["dir"] / "reviews.parquet")
    data = {"path": "reviews.parquet", "text": "review", "label": "sentiment", "max_length": 8}
    cfg = _cls_config(work, "dropped", model={"path": _dp_claim_bundle(work), "drop_privacy_claim": True}, epochs=1,
                      optimizer={"name": "adam", "lr": 0.01}, privacy=None, data=data)
    assert run(["train", cfg]) == 0
    assert "DP claim (epsilon 3.0) was dropped" in capsys.readouterr().out
    manifest = torchshield.inspect(work["dir"] / "dropped.tsb").manifest
    assert "privacy" not in manifest or not manifest["privacy"]
    assert manifest["provenance"]["dp_claim_dropped"] == {"by": "train", "epsilon": 3.0, "delta": 1e-5}


def test_line_examples_from_an_encrypted_bundle(work, key_file):
    """``unit: line``: one example per non-empty line; the input bundle is encrypted (model.key_file)."""
    from torchshield.crypto.keys import read_key_file

    d = work["dir"]
    protect_model(d / "gpt2", d / "gpt2-enc.tsb", key=read_key_file(key_file))
    cfg = _config(work, "lines", task="causal-lm", model={"path": "gpt2-enc.tsb", "key_file": str(key_file)},
                  data={"path": "corpus.txt", "block_size": 12, "unit": "line"}, epochs=1, batch_size=16,
                  optimizer={"name": "adam", "lr": 0.003})
    assert run(["train", cfg]) == 0
    manifest = torchshield.inspect(d / "lines.tsb").manifest
    assert manifest["metadata"]["data"]["unit"].startswith("one non-empty line of corpus.txt")
    assert "privacy" not in manifest or not manifest["privacy"]
    split = read_split(split_path(d / "lines.tsb"))
    assert split.source["unit"] == "line" and len(split.trained) == 120  # the corpus' 120 lines
    assert "key_file" not in json.dumps(manifest["metadata"]["config"])  # key paths stay out of the manifest
    assert torchshield.load_model(d / "lines.tsb").lm_head.weight.shape == (32, 32)


def _changed(before: dict, after: dict) -> set[str]:
    assert set(after) == set(before)
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_lora_on_gpt2_conv1d_and_a_frozen_head(work):
    """GPT-2's attention is a transformers Conv1D (peft: fan_in_fan_out); ``modules_to_save: []`` freezes
    the classifier too: in both, only the adapted weights differ from the input, by rank <= r."""
    d = work["dir"]
    cfg = _config(work, "lora-lm", task="causal-lm", model={"path": "gpt2"}, data={"path": "corpus.txt", "block_size": 16},
                  adapter={"r": 2, "target_modules": ["c_attn"]}, epochs=1, batch_size=16,
                  optimizer={"name": "adam", "lr": 0.01})
    assert run(["train", cfg]) == 0
    before = dict(transformers.GPT2LMHeadModel.from_pretrained(d / "gpt2").state_dict())
    tuned = torchshield.load_model(d / "lora-lm.tsb")
    assert tuned.lm_head.weight is tuned.transformer.wte.weight
    changed = _changed(before, dict(tuned.state_dict()))
    assert changed == {f"transformer.h.{i}.attn.c_attn.weight" for i in (0, 1)}
    for k in changed:
        s = torch.linalg.svdvals((tuned.state_dict()[k] - before[k]).double())
        assert s[0] > 1e-4 and float(s[2:].max()) < 1e-6 * float(s[0])
    cfg = _cls_config(work, "lora-frozen-head", adapter={"r": 2, "modules_to_save": []}, epochs=1, privacy=None,
                      optimizer={"name": "adam", "lr": 0.01})
    assert run(["train", cfg]) == 0
    adapter = torchshield.inspect(d / "lora-frozen-head.tsb").manifest["metadata"]["adapter"]
    assert adapter["also_trained"] == [] and adapter["trainable_parameters"] == 2 * 2 * (2 * 32 + 32 * 2)
    changed = _changed(dict(open_model(d / "bert.tsb").module.state_dict()),
                       dict(torchshield.load_model(d / "lora-frozen-head.tsb").state_dict()))
    assert changed == {f"bert.encoder.layer.{i}.attention.self.{m}.weight" for i in (0, 1) for m in ("query", "value")}


def test_decoder_classifier_learns_the_pad_id_and_padding_changes_nothing(work):
    """GPT-2 as a classifier reads the logits at each text's last real token, found by the pad id; a
    config without one gets the tokenizer's, and a padded batch predicts what each text alone does."""
    d = work["dir"]
    if not (d / "gpt2-cls").exists():
        gcfg = transformers.AutoConfig.for_model("gpt2", vocab_size=32, n_embd=32, n_layer=2, n_head=2,
                                                 n_positions=32, num_labels=2, resid_pdrop=0.0, embd_pdrop=0.0,
                                                 attn_pdrop=0.0, bos_token_id=1, eos_token_id=1,
                                                 architectures=["GPT2ForSequenceClassification"])
        assert gcfg.pad_token_id is None
        transformers.GPT2ForSequenceClassification(gcfg).save_pretrained(d / "gpt2-cls")
        work["bert_tok"].save(str(d / "gpt2-cls" / "tokenizer.json"))
    cfg = _cls_config(work, "gpt2-cls", model={"path": "gpt2-cls"}, epochs=1)
    assert run(["train", cfg]) == 0
    model = torchshield.load_model(d / "gpt2-cls.tsb")
    assert model.config.pad_token_id == 0  # [PAD]
    texts = ["good", "bad awful sad poor", "nice fine"]
    ids, mask = _encode(work["bert_tok"], texts, 8)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).logits
        for i, text in enumerate(texts):
            alone = torch.tensor([work["bert_tok"].encode(text).ids])
            torch.testing.assert_close(batch[i], model(input_ids=alone).logits[0], rtol=1e-4, atol=1e-5)


def test_commands_that_rebuild_table_models_refuse_a_text_fine_tune(work, capsys):
    d = work["dir"]
    save({"w": torch.zeros(2)}, d / "text.tsb", metadata={"task": "causal-lm", "config": {}})
    (d / "members.csv").write_text("a,label\n1,0\n", encoding="utf-8")
    assert run(["privacy", "audit", str(d / "text.tsb"), "--members", str(d / "members.csv"),
                "--non-members", str(d / "members.csv")]) == 2
    assert "a causal-lm fine-tune of a Hugging Face model" in capsys.readouterr().err


def test_neighbouring_tables_give_the_same_manifest(work):
    """The adversary reads the manifest of a DP fine-tune: trained on reviews.csv with or without one
    row, everything in it but the creation time is the same (the weights are the DP release)."""
    from torchshield.train.config import TrainConfig
    from torchshield.train.run import train_from_config

    manifests = []
    for name, rows in (("with", work["rows"]), ("without", work["rows"][1:])):
        d = work["dir"] / name
        d.mkdir(exist_ok=True)
        with open(d / "reviews.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([("review", "sentiment"), *rows])
        doc = yaml.safe_load(open(_cls_config(work, "neighbour", epochs=1)))
        doc["model"]["path"] = str(work["dir"] / "bert.tsb")
        train_from_config(TrainConfig.from_dict(doc, base=d))
        manifest = torchshield.inspect(d / "neighbour.tsb").manifest
        manifest["provenance"].pop("created")
        # what may differ: the time, the bundle's random id, and the weights (the DP release) with their digests
        manifests.append({k: v for k, v in manifest.items() if k not in ("created", "object_id", "tensors")})
    assert manifests[0] == manifests[1]
    assert "neighbour" in json.dumps(manifests[0]) and manifests[0]["privacy"]["steps"] == 4  # round(128 / 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU machine)")
@pytest.mark.parametrize("adapter", [None, {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]}],
                         ids=["full", "lora"])
def test_dp_fine_tune_on_cuda_keeps_the_cpu_claim_and_learns(work, capsys, adapter):
    """The same config with ``device: cuda``: the privacy claim is the CPU run's (same calibration and
    accounting), the bundle loads on the CPU and has learned the task."""
    d = work["dir"]
    extra = {"adapter": adapter} if adapter else {}
    name = f"cuda-{'lora' if adapter else 'full'}"
    assert run(["train", _cls_config(work, f"{name}-cpu", **extra), "--json"]) == 0
    assert run(["train", _cls_config(work, name, device="cuda", **extra), "--json"]) == 0
    capsys.readouterr()
    cpu, gpu = (torchshield.inspect(d / f"{n}.tsb").manifest["privacy"] for n in (f"{name}-cpu", name))
    for field in ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps"):
        assert gpu[field] == cpu[field], field
    tuned = open_model(d / f"{name}.tsb").module
    assert next(tuned.parameters()).device.type == "cpu"
    trained = _trained_rows(work, d / f"{name}.tsb")
    assert _cls_loss(tuned, work, trained) < 0.5 * _cls_loss(open_model(d / "bert.tsb").module, work, trained)
