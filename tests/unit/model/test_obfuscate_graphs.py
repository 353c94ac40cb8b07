"""Obfuscation of real graphs: a ResNet-style CNN (BatchNorm, residual +=, downsample), the same
nested in Sequential(Unflatten, ResNet), and tiny HF BERT / GPT-2 built from configs.

For each: outputs equal to float tolerance, weights actually changed (counted), names scrambled,
reversal bit-exact; a model where nothing can move is refused instead of reported as done."""

from __future__ import annotations

import copy

import pytest
import torch
from byom_models import BasicBlock
from torch import nn

from torchshield.crypto.keys import generate_master_key
from torchshield.errors import InputError
from torchshield.model.obfuscate import deobfuscate, obfuscate, obfuscate_model, torch_equal

Block = BasicBlock  # torchvision's BasicBlock, written out once in tests/byom_models.py


class ResNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Block(8, 8), Block(8, 8))
        self.layer2 = nn.Sequential(Block(8, 16, 2), Block(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics, then eval mode."""
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
        for _ in range(3):
            model(x * 2 + 0.3)
    return model.eval()


def _check(model: nn.Module, x, run, *, atol: float = 1e-5) -> dict[str, int]:
    key = generate_master_key()
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = run(model, x)
    result = obfuscate_model(model, key)
    assert result.tensors_changed > 0 and result.units_moved > 0
    assert result.names_scrambled == len(original)
    # the obfuscated tensors, loaded back under the original names, compute the same function
    kept = obfuscate_model(model, key, nonce=result.entry["nonce"], scramble_names=False)
    changed = [k for k, v in kept.tensors.items() if not torch_equal(v, original[k])]
    assert len(changed) == result.tensors_changed == kept.tensors_changed
    twin = copy.deepcopy(model)
    twin.load_state_dict(kept.tensors)
    with torch.no_grad():
        after = run(twin.eval(), x)
    assert torch.allclose(before, after, atol=atol, rtol=1e-4), (before - after).abs().max()
    restored = deobfuscate(result.tensors, result.entry, key)
    assert set(restored) == set(original)
    assert all(torch_equal(restored[k], original[k]) for k in original)
    return result.counts()


def test_resnet_channels_permuted_consistently_across_residual_stream_and_norms():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    model = _stats(ResNet(), x)
    counts = _check(model, x, lambda m, v: m(v))
    # all 10 convs, all 10 BNs (weight, bias, running mean and var) and fc's columns; fc's rows are the output
    assert counts["tensors_changed"] == 10 + 10 * 4 + 1
    assert counts["units_moved"] > 0.8 * (8 + 8 + 8 + 16 + 16 + 16)


def test_nested_sequential_unflatten_resnet_is_really_obfuscated():
    """The issue's case: all tensors came back byte-identical under new names, with success printed."""
    torch.manual_seed(1)
    x = torch.randn(4, 64)
    model = _stats(nn.Sequential(nn.Unflatten(1, (1, 8, 8)), ResNet()), x)
    counts = _check(model, x, lambda m, v: m(v))
    assert counts["tensors_changed"] == 10 + 10 * 4 + 1


def test_flatten_into_linear_moves_channel_blocks():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.GroupNorm(6, 6), nn.GELU(), nn.Unflatten(1, (6, 1)),
                          nn.Flatten(1, 2), nn.Flatten(), nn.Linear(6 * 64, 10))
    with pytest.raises(InputError, match="nothing in this Sequential can be permuted"):
        obfuscate(model, generate_master_key())  # Unflatten/Flatten(1,2): unknown reshapes freeze the channels

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.norm = nn.GroupNorm(1, 6)
            self.fc = nn.Linear(6 * 64, 10)
            with torch.no_grad():
                self.norm.weight.uniform_(0.5, 1.5)
                self.norm.bias.normal_()

        def forward(self, x):
            return self.fc(torch.relu(self.norm(self.conv(x))).flatten(1))

    x = torch.randn(4, 1, 8, 8)
    counts = _check(Net().eval(), x, lambda m, v: m(v))
    assert counts["tensors_changed"] == 5  # conv weight, bias, norm weight, bias, fc weight


@pytest.mark.parametrize("model", [
    nn.Linear(4, 3),
    nn.Sequential(nn.Linear(4, 3)),
    nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1), nn.Linear(3, 2)),
], ids=["linear", "one-layer", "softmax-between"])
def test_nothing_to_change_is_refused_with_the_reason(model):
    with pytest.raises(InputError, match="can be permuted|cannot be|not known"):
        obfuscate_model(model, generate_master_key())


def test_every_unit_reaching_the_output_is_refused():
    class Tap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x)
            return self.b(h), h  # the hidden units are themselves an output: their order is visible

    with pytest.raises(InputError, match="the model's output"):
        obfuscate_model(Tap(), generate_master_key())


transformers = pytest.importorskip("transformers")


def _bert():
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(3)
    return _random_biases(transformers.BertForSequenceClassification(cfg).eval())


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    torch.manual_seed(4)
    return _random_biases(transformers.GPT2LMHeadModel(cfg).eval())


def _random_biases(model: nn.Module) -> nn.Module:
    """HF initialises biases to zero and LayerNorm weights to one: a permuted constant vector would
    not show as changed."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
            elif p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model


def _logits(m, v):
    return m(input_ids=v).logits


@pytest.mark.parametrize("build", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_hf_transformer_residual_stream_heads_and_mlp_units_moved(build):
    model = build()
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(5))
    counts = _check(model, ids, _logits, atol=1e-5)
    bert = isinstance(model, transformers.BertForSequenceClassification)
    state = model.state_dict()
    # the residual stream touches every tensor but BERT's classifier bias (its rows are the classes):
    # embeddings, every LayerNorm, Q/K/V/O, both MLP layers, the pooler and the classifier's columns;
    # GPT-2: also lm_head, which is wte (tied), counted under both names
    assert counts["tensors_changed"] == len(state) - (1 if bert else 0)
    result = obfuscate_model(model, generate_master_key())
    by_kind = result.units_by_kind
    assert by_kind["residual stream"] > 0.8 * 32, by_kind
    # two head permutations (QK, VO) of 32 and the MLP units per layer; BERT's pooler (32 units) too
    assert by_kind["attention heads / MLP units"] > 0.8 * 2 * (2 * 32 + (48 if bert else 128))
    assert result.units_moved == sum(by_kind.values())
    assert "residual stream of width 32" in result.note


def test_gpt2_tied_embeddings_stay_tied_and_load():
    model = _gpt2()
    key = generate_master_key()
    kept = obfuscate_model(model, key, scramble_names=False)
    assert kept.tensors["lm_head.weight"] is kept.tensors["transformer.wte.weight"]
    assert not torch_equal(kept.tensors["transformer.wte.weight"], model.state_dict()["transformer.wte.weight"])
    twin = copy.deepcopy(model)
    twin.load_state_dict(kept.tensors)
    assert twin.lm_head.weight is twin.transformer.wte.weight  # transformers' tie survives the load
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.allclose(_logits(model, ids), _logits(twin.eval(), ids), atol=1e-5)
    # scrambled names: one tensor under both scrambled names, restored bit for bit
    result = obfuscate_model(model, key)
    restored = deobfuscate(result.tensors, result.entry, key)
    assert torch_equal(restored["lm_head.weight"], model.lm_head.weight.detach())


def test_bare_base_model_keeps_its_residual_stream_and_says_why():
    """A bare BertModel returns the stream itself: permuting it would change the output."""
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=32)
    torch.manual_seed(7)
    model = _random_biases(transformers.BertModel(cfg).eval())
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(8))
    _check(model, ids, lambda m, v: m(input_ids=v).last_hidden_state, atol=1e-5)
    result = obfuscate_model(model, generate_master_key())
    assert "residual stream" not in result.units_by_kind and "returns its hidden states" in result.note
    assert result.units_by_kind["attention heads / MLP units"] > 0


def test_a_wrong_plan_is_refused_by_the_probe(monkeypatch):
    """The probe run: had a block been mapped wrongly, the logits would differ and nothing is written."""
    from torchshield.model.obfuscate import transformer_blocks

    real = transformer_blocks.residual_groups

    def broken(model):
        groups, note = real(model)
        rows, build = groups[0]
        return [([r for r in rows if "ln_f" not in r[0]], build), *groups[1:]], note  # forget one LayerNorm

    monkeypatch.setattr(transformer_blocks, "residual_groups", broken)
    with pytest.raises(InputError, match="would change this GPT2LMHeadModel's outputs"):
        obfuscate_model(_gpt2(), generate_master_key())


def test_cli_obfuscates_a_protected_gpt2_bundle_and_restores_it(tmp_path, capsys):
    """`model obfuscate` on a bundle from `model protect` (HF GPT-2, tied lm_head): counts printed, the
    names-kept bundle still loads as the model (architecture, tokenizer files carried) and computes the
    same logits, the scrambled one restores bit for bit."""
    import json

    from byom_models import tiny_gpt2

    import torchshield
    from torchshield.cli.app import run
    from torchshield.crypto.keys import write_key_file

    key = tmp_path / "k.key"
    write_key_file(key)
    src = tmp_path / "gpt2.tsb"
    assert run(["model", "protect", str(tiny_gpt2(tmp_path / "hf")), "--out", str(src)]) == 0
    kept, obf, back = tmp_path / "kept.tsb", tmp_path / "obf.tsb", tmp_path / "back.tsb"
    capsys.readouterr()
    assert run(["model", "obfuscate", str(src), "--out", str(kept), "--key-file", str(key), "--keep-names",
                "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["units_by_kind"]["residual stream"] > 0 and doc["changed"]["tensors_changed"] > 0
    original, twin = torchshield.load_model(src), torchshield.load_model(kept)
    assert twin.lm_head.weight is twin.transformer.wte.weight
    assert not torch.equal(twin.transformer.wte.weight, original.transformer.wte.weight)
    assert torchshield.inspect(kept).manifest.get("files") == torchshield.inspect(src).manifest.get("files")
    ids = torch.randint(0, original.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.allclose(original(input_ids=ids).logits, twin(input_ids=ids).logits, atol=1e-5)
    assert run(["model", "obfuscate", str(src), "--out", str(obf), "--key-file", str(key)]) == 0
    assert "residual stream" in capsys.readouterr().out
    assert run(["model", "deobfuscate", str(obf), "--out", str(back), "--key-file", str(key)]) == 0
    a, b = torchshield.load(src), torchshield.load(back)
    assert set(a) == set(b) and all(torch_equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(torchshield.load_model(back)(input_ids=ids).logits, original(input_ids=ids).logits)
