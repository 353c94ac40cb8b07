"""Audit findings on `model obfuscate` (F1, F9, F11, F14): layouts the planners used to permute
wrongly are refused or permuted exactly, every planner's result is run against the original before
anything is written, tied weights stay tied through deobfuscate, and --keep-names is reversible.

Each layout is checked as "refused with an InputError, or the permuted weights compute the same
outputs"; the models are tiny and seeded."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchshield.crypto.keys import generate_master_key
from torchshield.errors import InputError
from torchshield.model.obfuscate import deobfuscate, obfuscate_model, torch_equal


def _random_norms(model: nn.Module) -> nn.Module:
    """Non-trivial norm parameters and running statistics (a permuted constant would not show), eval mode."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
                if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 1.5)
    return model.eval()


# --- factories (also used as `--factory test_obfuscate_audit:NAME` by the CLI tests) -----------------

def pool_mlp() -> nn.Module:
    """A MaxPool1d over the hidden features: it mixes neighbouring units, so their order matters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.MaxPool1d(3, 1, 1), nn.Linear(32, 10)).eval()


class TwoBranch(nn.Module):
    """fc1 is called as a module and its weight is read again through F.linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 32)
        self.out, self.out2 = nn.Linear(32, 10), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        g = torch.relu(F.linear(1 - x, self.fc1.weight, self.fc1.bias))
        return self.out(h) + self.out2(g)


def twobranch() -> nn.Module:
    return TwoBranch().eval()


class Tied(nn.Module):
    """Two heads sharing one weight (the manifest stores it once, with an alias)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.enc, self.mid = nn.Linear(64, 32), nn.Linear(32, 32)
        self.head, self.head2 = nn.Linear(32, 10), nn.Linear(32, 10, bias=False)
        self.head2.weight = self.head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.mid(torch.relu(self.enc(x.flatten(1)))))
        return self.head(h) + self.head2(h)


def tied() -> nn.Module:
    return Tied().eval()


def flat_bn() -> nn.Module:
    torch.manual_seed(3)
    return _random_norms(nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                       nn.Flatten(), nn.BatchNorm1d(256), nn.Linear(256, 10)))


class GetAttrTie(nn.Module):
    """fc1's weight is also read directly in forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.fc1, self.fc2, self.out = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        return self.out(h) + (x @ self.fc1.weight.T)[:, :4]


class SeqAxis(nn.Module):
    """Linear on [N, T, F], then BatchNorm1d(T) with T == F: it normalises T, not the Linear's units."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.a, self.bn, self.c = nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.bn(self.a(x.reshape(-1, 8, 8))))).mean(1)


def _layouts() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(6)
    return {
        "chain-maxpool1d": (pool_mlp(), torch.rand(5, 64)),
        "chain-avgpool1d": (nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.AvgPool1d(3, 1, 1), nn.Linear(12, 4)),
                            torch.rand(5, 16)),
        "chain-conv-layernorm-width": (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm(8), nn.ReLU(),
                                                     nn.Conv2d(8, 4, 3, padding=1), nn.Flatten(),
                                                     nn.Linear(256, 4)), torch.rand(5, 3, 8, 8)),
        "graph-functional-reuse": (twobranch(), torch.rand(5, 64)),
        "graph-getattr": (GetAttrTie(), torch.rand(5, 16)),
        "graph-batchnorm-time-axis": (SeqAxis(), torch.rand(5, 64)),
        "graph-maxpool1d-in-sequential": (nn.Sequential(nn.Unflatten(1, (1, 16)), nn.Linear(16, 12), nn.ReLU(),
                                                        nn.MaxPool1d(3, 1, 1), nn.Linear(12, 4), nn.Flatten()),
                                          torch.rand(5, 16)),
        "flat-batchnorm": (flat_bn(), torch.rand(5, 64)),
    }


def _refused_or_exact(model: nn.Module, x: torch.Tensor) -> bool:
    """True when obfuscation refused; otherwise assert that the permuted weights compute the same outputs."""
    model = _random_norms(model)
    with torch.no_grad():
        before = model(x)
    try:
        result = obfuscate_model(model, generate_master_key(), scramble_names=False)
    except InputError:
        return True
    twin = copy.deepcopy(model)
    twin.load_state_dict(result.tensors)
    with torch.no_grad():
        after = twin.eval()(x)
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-4), float((before - after).abs().max())
    assert result.tensors_changed > 0
    return False


@pytest.mark.parametrize("name", list(_layouts()))
def test_layouts_that_do_not_permute_are_refused_or_permuted_exactly(name):
    model, x = _layouts()[name]
    _refused_or_exact(model, x)


@pytest.mark.parametrize("name", ["graph-functional-reuse", "graph-getattr"])
def test_a_weight_read_outside_its_module_pins_only_its_own_units(name):
    """fc1's units are pinned (its weight is read directly); fc2's still move."""
    model, x = _layouts()[name]
    assert not _refused_or_exact(model, x)
    result = obfuscate_model(model, generate_master_key(), scramble_names=False)
    state = model.state_dict()
    assert torch_equal(result.tensors["fc1.weight"], state["fc1.weight"])
    assert not torch_equal(result.tensors["fc2.weight"], state["fc2.weight"])


def test_batchnorm_over_another_axis_pins_the_units_it_does_not_normalise():
    """With the input spec the probe runs, so the refusal is the planner's: BatchNorm1d(T) on [N, T, F]."""
    with pytest.raises(InputError, match="layer 'bn'"):
        obfuscate_model(_random_norms(SeqAxis()), generate_master_key(), input_spec={"shape": [64]})


def test_flattened_batchnorm_moves_in_channel_blocks():
    """Conv -> Flatten -> BatchNorm1d(C*H*W) -> Linear: the norm's features follow the channels in blocks."""
    model, x = flat_bn(), torch.rand(5, 64)
    assert not _refused_or_exact(model, x)


def test_every_planner_checks_the_function_before_returning(monkeypatch):
    """A graph plan that forgets a consumer's columns changes the outputs: refused, not returned."""
    _break_graph_plans(monkeypatch)
    with pytest.raises(InputError, match="would change .* outputs"):
        obfuscate_model(twobranch(), generate_master_key())


def test_unmerged_lora_adapters_are_refused_with_the_fix():
    peft = pytest.importorskip("peft")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    torch.manual_seed(7)
    wrapped = peft.get_peft_model(Net(), peft.LoraConfig(r=2, target_modules=["fc1"]))
    with pytest.raises(InputError, match="merge"):
        obfuscate_model(wrapped, generate_master_key())


def test_unmerged_lora_on_a_hugging_face_model_is_refused_with_the_fix():
    """The audit's case: a peft-wrapped BERT classifier raised KeyError."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=24, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(8)
    base = transformers.BertForSequenceClassification(cfg).eval()
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    with pytest.raises(InputError, match="merge_and_unload"):
        obfuscate_model(wrapped, generate_master_key())


def test_deobfuscate_keeps_tied_weights_one_tensor():
    model = tied()
    key = generate_master_key()
    result = obfuscate_model(model, key)
    restored = deobfuscate(result.tensors, result.entry, key)
    assert restored["head2.weight"] is restored["head.weight"]
    state = model.state_dict()
    assert all(torch_equal(restored[k], state[k]) for k in state)


# --- the CLI: nothing written on refusal, aliases kept, --keep-names reversible -------------------------

@pytest.fixture()
def bundles(tmp_path):
    from torchshield.crypto.keys import write_key_file
    from torchshield.model.loading import protect_model

    spec = {"kind": "tensor", "shape": [64], "dtype": "float32", "min": 0.0, "max": 1.0}
    write_key_file(tmp_path / "k.key")
    for name in ("pool_mlp", "twobranch", "tied", "flat_bn"):
        torch.save(globals()[name]().state_dict(), tmp_path / f"{name}.pt")
        protect_model(tmp_path / f"{name}.pt", tmp_path / f"{name}.tsb", input_spec=spec,
                      architecture={"kind": "factory", "target": f"test_obfuscate_audit:{name}"})
    return tmp_path


def _cli(*argv) -> int:
    from torchshield.cli.app import run

    return run([str(a) for a in argv])


def _outputs(path, x):
    import torchshield

    model = torchshield.load_model(path, allow_factories=["test_obfuscate_audit:*"])
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("name", ["pool_mlp", "twobranch", "flat_bn"])
def test_cli_obfuscate_refuses_cleanly_or_keeps_outputs(bundles, capsys, name):
    src, out = bundles / f"{name}.tsb", bundles / f"{name}.obf.tsb"
    code = _cli("model", "obfuscate", src, "--out", out, "--key-file", bundles / "k.key", "--keep-names",
                "--allow-factory", "test_obfuscate_audit:*")
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    if code == 2:
        assert not out.exists()
        return
    x = torch.rand(6, 64, generator=torch.Generator().manual_seed(8))
    before, after = _outputs(src, x), _outputs(out, x)
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-4), float((before - after).abs().max())


def test_cli_writes_nothing_when_the_function_check_refuses(bundles, capsys, monkeypatch):
    _break_graph_plans(monkeypatch)
    out = bundles / "twobranch.obf.tsb"
    code = _cli("model", "obfuscate", bundles / "twobranch.tsb", "--out", out, "--key-file", bundles / "k.key",
                "--allow-factory", "test_obfuscate_audit:*")
    err = capsys.readouterr().err
    assert code == 2 and "would change this TwoBranch's outputs" in err and "nothing was written" in err, err
    assert not out.exists()


@pytest.mark.parametrize("keep_names", [False, True], ids=["scrambled", "keep-names"])
def test_cli_round_trip_keeps_aliases_and_keep_names_is_reversible(bundles, capsys, keep_names):
    import torchshield

    src, obf, back = bundles / "tied.tsb", bundles / "tied.obf.tsb", bundles / "tied.back.tsb"
    key = ["--key-file", bundles / "k.key"]
    assert torchshield.inspect(src).manifest.get("aliases") == {"head2.weight": "head.weight"}
    extra = ["--keep-names"] if keep_names else []
    assert _cli("model", "obfuscate", src, "--out", obf, *key, *extra, "--json",
                "--allow-factory", "test_obfuscate_audit:*") == 0
    assert json.loads(capsys.readouterr().out)["changed"]["tensors_changed"] > 0
    assert len(torchshield.inspect(obf).manifest.get("aliases") or {}) == 1
    assert _cli("model", "deobfuscate", obf, "--out", back, *key) == 0, capsys.readouterr().err
    assert torchshield.inspect(back).manifest.get("aliases") == {"head2.weight": "head.weight"}
    a, b = torchshield.load(src), torchshield.load(back)
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)
    assert back.stat().st_size <= src.stat().st_size + 4096  # the tied tensor is not stored twice


def _break_graph_plans(monkeypatch):
    """Make the graph planner forget a consumer's columns (out.weight): a plan that changes outputs."""
    from torchshield.model.obfuscate import graph

    real = graph.trace_groups

    def broken(*args, **kwargs):
        groups = real(*args, **kwargs)
        for g in groups:
            g.rows = [r for r in g.rows if r[0] != "out.weight"]
        return groups

    monkeypatch.setattr(graph, "trace_groups", broken)
