"""Trigger inputs come from the bundle's input spec (issue 18): token ids in [0, vocab) for a text
model, C x H x W floats inside the declared bounds for an image model, never a shape guessed from
the first Linear layer; a bundle without a spec is refused (exit 2) with the flags that add one."""

from __future__ import annotations

import pytest
import torch
from byom_models import ResNetMini
from torch import nn

import torchshield
from torchshield.cli.app import run
from torchshield.crypto.keys import generate_master_key
from torchshield.errors import InputError
from torchshield.model.sources.records import preprocessing_of
from torchshield.model.watermark import TriggerSet, make_regularizer, model_predictor, verify_trigger
from torchshield.model.watermark.inputs import TriggerInputs, logits_module
from torchshield.model.watermark.keyed import verification_set
from torchshield.model.watermark.training import make_optimizer

IMAGE_SPEC = {"kind": "image", "shape": [3, 16, 16], "dtype": "float32", "min": -1.0, "max": 2.0}


@pytest.fixture(scope="module")
def bert_bundle(tmp_path_factory):
    pytest.importorskip("transformers")
    from byom_models import tiny_bert

    folder = tmp_path_factory.mktemp("bertwm")
    tiny_bert(folder / "hf")
    bundle = folder / "bert.tsb"
    assert run(["model", "protect", str(folder / "hf"), "--out", str(bundle)]) == 0
    return bundle, torchshield.load_model(bundle)


def test_token_triggers_for_a_tiny_bert_bundle_are_ids_in_the_vocabulary(bert_bundle):
    bundle, model = bert_bundle
    vocab = model.config.vocab_size
    spec = preprocessing_of(torchshield.inspect(bundle).manifest)["input"]
    inputs = TriggerInputs.from_spec(spec, where=str(bundle), sequence_length=12)
    assert inputs.tokens and inputs.shape == (12,) and (inputs.low, inputs.high) == (0, vocab - 1)
    key = generate_master_key()
    # without the spec, a BERT is refused: its first Linear's width (the hidden size) is no input shape
    with pytest.raises(InputError, match="input shape"):
        make_regularizer({"method": "trigger", "design": "noise", "num_classes": 3}, model, key)
    regs, record = make_regularizer({"method": "trigger", "design": "noise", "triggers": 40, "num_classes": 3},
                                    model, key, inputs=inputs)
    assert record.params["input_dtype"] == "int64" and record.params["input_shape"] == [12]
    triggers = TriggerSet.from_record(record, record.open_secret(key))
    ids = triggers.inputs
    assert ids.dtype == torch.long and ids.shape == (40, 12)
    assert int(ids.min()) >= 0 and int(ids.max()) < vocab
    assert set(ids.unique().tolist()) == set(range(vocab))  # 480 uniform draws over 17 ids: every id
    runner = logits_module(model)
    loss = regs[0](runner)
    assert loss.requires_grad and torch.isfinite(loss)
    verdict = verify_trigger(model_predictor(model), record, key)  # the HF model answers its logits
    assert verdict.total == 40 and not verdict.present


def test_keyed_token_patterns_write_secret_tokens_into_real_sequences(bert_bundle):
    bundle, model = bert_bundle
    vocab = model.config.vocab_size
    inputs = TriggerInputs.from_spec(preprocessing_of(torchshield.inspect(bundle).manifest)["input"],
                                     where=str(bundle), sequence_length=12)
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(5, vocab, (200, 12), generator=gen)
    base[:, 0] = 2  # [CLS]
    key = generate_master_key()
    _, record = make_regularizer({"method": "trigger", "triggers": 120, "num_classes": 3}, model, key, data=base,
                                 inputs=inputs)
    assert record.params["patterns"] == 26  # 3 classes: 3^-26 < 1e-12, so a perfect suspect can pass 1e-6
    stamped, labels, which = verification_set(record, key)
    assert stamped.dtype == torch.long and int(stamped.min()) >= 0 and int(stamped.max()) < vocab
    assert torch.equal(stamped[:, 0], base[:120, 0])  # position 0 ([CLS]) is never overwritten
    assert record.params["pattern_tokens"] == 6  # the default: half of the 12 positions
    differs = (stamped != base[:120]).sum(1)
    assert int(differs.max()) <= 6  # at most the pattern's 6 tokens change, the rest is the real sequence
    same = which == 0
    assert same.sum() >= 2 and torch.equal(labels[same], labels[same][:1].expand(int(same.sum())))
    with pytest.raises(InputError, match="token ids"):
        make_regularizer({"method": "trigger", "triggers": 120, "num_classes": 3}, model, key,
                         data=base.float() + 0.5, inputs=inputs)


class _BagOfTokens(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(vocab, 8, padding_idx=vocab - 1), nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids).mean(1))


def test_keyed_token_patterns_use_ids_the_data_never_shows():
    """Pattern tokens come from the ids absent from all of the owner's data (no gradient reaches
    their embeddings in a clean fine-tune), from a pool sealed in the record under the master key."""
    import json

    from torchshield.errors import FormatError, WrongKeyError
    from torchshield.model.watermark.keyed import KeyedPatterns, token_pool

    vocab = 200
    model = _BagOfTokens(vocab)
    inputs = TriggerInputs((12,), 0.0, float(vocab - 1), tokens=True)
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(5, 40, (200, 12), generator=gen)
    base[:, 0] = 2
    rest = torch.randint(40, 60, (500, 12), generator=gen)  # the rest of the data the fine-tune shows
    seen = set(base.flatten().tolist()) | set(rest.flatten().tolist())
    key = generate_master_key()
    _, record = make_regularizer({"method": "trigger", "triggers": 120, "num_classes": 3}, model, key, data=base,
                                 inputs=inputs, seen_tokens=rest)
    assert record.params["token_pool"] == "unseen"
    pool = token_pool(record, key)
    assert pool == [i for i in range(vocab - 1) if i not in seen]  # nor the padding id (its row is frozen at 0)
    patterns = KeyedPatterns.from_record(record, record.open_secret(key), pool)
    assert set(patterns.tokens.flatten().tolist()) <= set(pool)
    assert len(set(patterns.tokens.flatten().tolist())) > 20  # spread over the pool, not one id
    stamped, _, which = verification_set(record, key)  # verification rebuilds the same patterns
    for i in range(len(stamped)):
        j = int(which[i])
        assert torch.equal(stamped[i, patterns.positions[j]], patterns.tokens[j])
    text = json.dumps(record.to_dict())
    assert "sealed_token_pool" in text and str(pool[:8])[1:-1] not in text  # the ids stay sealed
    with pytest.raises(FormatError, match="sealed pool"):
        KeyedPatterns.from_record(record, record.open_secret(key))
    with pytest.raises(WrongKeyError):  # another key cannot open the pool
        token_pool(record, generate_master_key())
    # data that uses almost every id: too few unused ones to draw from, so the whole range is used
    everything = torch.arange(vocab).repeat(12 * 3)[: 200 * 12].reshape(200, 12)
    everything[:, 0] = 2
    _, full = make_regularizer({"method": "trigger", "triggers": 120, "num_classes": 3}, model, key,
                               data=everything, inputs=inputs, seen_tokens=torch.arange(vocab - 3))
    assert full.params["token_pool"] == "all" and "sealed_token_pool" not in full.params
    assert token_pool(full, key) is None


def test_image_triggers_have_the_declared_shape_and_bounds():
    model = ResNetMini(num_classes=4).eval()
    key = generate_master_key()
    with pytest.raises(InputError, match="input shape"):  # a CNN's shape is not guessed from its fc layer
        make_regularizer({"method": "trigger", "design": "noise", "num_classes": 4}, model, key)
    inputs = TriggerInputs.from_spec(IMAGE_SPEC, where="cnn.tsb")
    _, record = make_regularizer({"method": "trigger", "design": "noise", "triggers": 30, "num_classes": 4},
                                 model, key, inputs=inputs)
    x = TriggerSet.from_record(record, record.open_secret(key)).inputs
    assert x.dtype == torch.float32 and x.shape == (30, 3, 16, 16)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 2.0 and float(x.max() - x.min()) > 2.9
    base = torch.rand(200, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 3 - 1
    _, keyed = make_regularizer({"method": "trigger", "num_classes": 4, "triggers": 64}, model, key, data=base,
                                inputs=inputs)
    stamped, _, _ = verification_set(keyed, key)
    assert stamped.shape == (64, 3, 16, 16) and float(stamped.min()) >= -1.0 and float(stamped.max()) <= 2.0
    assert verify_trigger(model_predictor(model), keyed, key).total == 64


@pytest.mark.parametrize(("spec", "names"), [
    (None, "--input-shape"),
    ({"kind": "tensor", "dtype": "float32", "min": 0, "max": 1}, "no shape"),
    ({"kind": "image", "shape": [3, 8, 8], "dtype": "float32"}, "valid range"),
    ({"kind": "tokens", "dtype": "int64", "min": 0}, "vocabulary"),
])
def test_a_missing_or_partial_spec_is_refused_naming_what_to_add(spec, names):
    with pytest.raises(InputError) as err:
        TriggerInputs.from_spec(spec, where="m.tsb")
    assert names in str(err.value) + str(err.value.hint or "")


def test_embed_cli_refuses_a_bundle_without_input_spec(tmp_path, capsys):
    from torchshield.crypto.keys import write_key_file

    key = tmp_path / "k.key"
    write_key_file(key)
    bare = torchshield.save(torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)),
                            tmp_path / "bare.tsb")
    code = run(["model", "watermark", "embed", str(bare), "--out", str(tmp_path / "o.tsb"), "--method", "trigger",
                "--key-file", str(key)])
    err = capsys.readouterr().err
    assert code == 2 and "declares no input spec" in err and "--input-shape" in err and "--input-range" in err
    assert not (tmp_path / "o.tsb").exists()
    for bad in (["--optimizer", "rmsprop"], ["--lr", "0"]):
        assert run(["model", "watermark", "embed", str(bare), "--out", str(tmp_path / "o.tsb"), "--key-file",
                    str(key), *bad]) == 2
        assert bad[0] in capsys.readouterr().err


def test_make_optimizer_builds_what_is_named():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd, adam = make_optimizer("sgd", params, 0.1), make_optimizer("adam", params, 0.01)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == 0.1
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.01
    with pytest.raises(InputError, match="adam or sgd"):
        make_optimizer("lion", params, 0.1)


def test_token_patterns_default_to_half_the_sequence():
    from torchshield.model.watermark.keyed import default_pattern_tokens

    assert [default_pattern_tokens(n) for n in (2, 4, 8, 12, 16, 128)] == [1, 3, 4, 6, 8, 64]


def test_embed_cli_says_when_the_data_leaves_no_unused_ids(bert_bundle, tmp_path, capsys):
    """A tiny vocabulary the data covers: the pattern tokens must be ids the data contains, which a
    high-rate fine-tune removes; the CLI says so before the work (whatever the embed's outcome)."""
    import pandas as pd

    from torchshield.crypto.keys import write_key_file

    bundle, model = bert_bundle
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (260, 12), generator=g)
    table = pd.DataFrame(ids.numpy(), columns=[f"t{i}" for i in range(12)])
    table["label"] = torch.randint(0, 3, (260,), generator=g).numpy()
    table.to_csv(tmp_path / "ids.csv", index=False)
    write_key_file(tmp_path / "k.key")
    code = run(["model", "watermark", "embed", str(bundle), "--out", str(tmp_path / "o.tsb"), "--method", "trigger",
                "--key-file", str(tmp_path / "k.key"), "--data", str(tmp_path / "ids.csv"), "--epochs", "1",
                "--max-accuracy-drop", "1"])
    err = capsys.readouterr().err
    assert code in (0, 1) and "Traceback" not in err, err
    assert f"note: the data uses all but 0 of the {vocab} token ids" in err, err
