"""Per-example clipping, layer by layer: each rule against the one-example-at-a-time reference.

Covers what real models do to the engine: sequences, convolution options, embeddings with
padding, tied and reused weights, frozen parameters, layers left in eval(), in-place ops on layer
outputs, broadcast buffers and parameters, and layers it must refuse before training."""

from __future__ import annotations

import pytest
import torch
from per_example_reference import assert_matches, engine, reference
from torch import nn

from torchshield.errors import InputError
from torchshield.train.per_example import PerExampleClipper, unsupported_layer

STRATEGIES = ["auto", "ghost", "materialise"]


def _mse(model, batch):
    out = model(batch[0])
    return (out - 0.1).pow(2).flatten(1).sum(1)


def _check(model, x, strategy="auto"):
    torch.manual_seed(0)
    model = model.double()
    return assert_matches(model, _mse, (x.double() if x.is_floating_point() else x,), strategy)


def _rand(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (4, 9, 9)),
    (lambda: nn.Conv2d(3, 4, (3, 2), padding="same", padding_mode="reflect"), (3, 6, 5)),
    (lambda: nn.Conv2d(3, 4, 4, padding="same", dilation=(1, 2)), (3, 7, 7)),  # asymmetric 'same'
    (lambda: nn.Conv2d(4, 4, 3, groups=4, bias=False), (4, 6, 6)),  # depthwise
    (lambda: nn.Conv1d(3, 5, 3, stride=2, padding=2, dilation=2, padding_mode="circular"), (3, 11)),
    (lambda: nn.Conv1d(4, 6, 2, groups=2), (4, 7)),
    (lambda: nn.Conv3d(2, 3, 2, stride=(1, 2, 1), padding=1), (2, 4, 4, 3)),
    (lambda: nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), (6, 5)),  # a sequence of 6
    (lambda: nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3)), (2, 3, 5)),
    (lambda: nn.Sequential(nn.Linear(5, 6), _Reshape((2, 3), nn.LayerNorm((2, 3)))), (4, 5)),  # 2-D shape
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4)), (2, 5, 5)),
    (lambda: nn.Sequential(nn.Linear(5, 4), nn.GroupNorm(2, 4)), (5,)),
    (lambda: nn.Sequential(nn.Linear(5, 6), nn.RMSNorm(6, eps=1e-6)), (3, 5)),
])
def test_layer_rules_match_reference(make, shape, strategy):
    torch.manual_seed(0)
    _check(make(), _rand(5, *shape), strategy)


class _Reshape(nn.Module):
    def __init__(self, shape, inner):
        super().__init__()
        self.shape, self.inner = shape, inner

    def forward(self, x):
        return self.inner(x.view(x.shape[0], -1, *self.shape))


def test_transformers_rms_norm_is_clipped_by_duck_typing():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    torch.manual_seed(0)
    norm = llama.LlamaRMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    _check(nn.Sequential(nn.Linear(5, 6), norm), _rand(5, 3, 5))


def test_rms_norm_like_layer_with_other_maths_is_refused_at_first_step():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")

    class LooksLikeRMSNorm(llama.LlamaRMSNorm):
        def forward(self, x):
            return self.weight * x  # no normalisation: the duck-typed rule would be wrong

    model = nn.Sequential(nn.Linear(5, 6), LooksLikeRMSNorm(6))
    LooksLikeRMSNorm.__module__ = llama.__name__
    PerExampleClipper(model)
    with pytest.raises(InputError, match=r"1 \(LooksLikeRMSNorm\).*not weight \* x / rms"):
        model(_rand(4, 5).float())


class _TiedLM(nn.Module):
    """Embedding and output head sharing one weight, the head also used twice, a [1, L] position buffer."""

    def __init__(self, vocab=11, d=6, length=7):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Embedding(length, d)
        self.register_buffer("position_ids", torch.arange(length).unsqueeze(0))
        self.mix = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids)
        h += self.pos(self.position_ids[:, :ids.shape[1]])  # in place, broadcast over the batch
        h = torch.tanh(self.mix(h))
        h = self.mix(h) + h  # the same layer twice
        return self.head(h).softmax(-1)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tied_reused_and_broadcast_weights_are_counted_once_per_example(strategy):
    torch.manual_seed(0)
    ids = torch.randint(0, 11, (6, 7), generator=torch.Generator().manual_seed(3))
    ids[0, :3] = 0  # padding rows get no gradient
    ids[1, :] = 4  # a token repeated: the index-equality ghost norm adds its rows
    _check(_TiedLM(), ids, strategy)


def test_a_linear_with_frozen_weight_is_not_over_clipped():
    """The old ghost engine counted the frozen weight in the norm and over-clipped the bias (28%)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    model[0].weight.requires_grad_(False)
    x = _rand(6, 8)
    norms = assert_matches(model, _mse, (x,))  # the reference differentiates trainable parameters only
    _, sums = engine(model, _mse, (x,), 1.0)
    assert model[0].weight not in sums
    model[0].weight.requires_grad_(True)
    counted, _ = reference(model, _mse, (x,), 1e9)
    assert (counted > norms * 1.05).all()  # counting the frozen weight would change every norm


def test_a_trainable_layer_left_in_eval_mode_still_gets_its_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Dropout(0.0), nn.Linear(6, 2)).double()
    model.train()
    model[0].eval()
    _, sums = engine(model, _mse, (_rand(4, 5),), 1.0)
    assert model[0].weight in sums and float(sums[model[0].weight].abs().sum()) > 0
    _check(model, _rand(4, 5))


class _InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.norm = nn.Linear(5, 5), nn.Linear(5, 5), nn.LayerNorm(5)

    def forward(self, x):
        h = self.a(x)
        h.mul_(3.0)  # the layer's output rewritten: its gradient is w.r.t. the value it produced
        out = self.norm(self.b(torch.relu(h)))
        out += x  # residual in place
        return torch.relu_(out)


def test_in_place_ops_on_layer_outputs_use_the_value_the_layer_produced():
    torch.manual_seed(0)
    _check(_InPlace(), _rand(5, 5))


def test_an_input_changed_in_place_after_the_layer_read_it_is_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            h = x * 1.0
            y = self.lin(h)
            h.add_(1.0)  # the recorded activation no longer holds what the layer saw
            return y + h

    model = Bad()
    clipper = PerExampleClipper(model)
    with pytest.raises(InputError, match="input of layer lin was modified in place"):
        clipper.clipped_sum(_mse(model, (torch.randn(3, 4),)), 1.0)


class _Tokens(nn.Module):
    """ViT-style parameters owned by a container: a class token (expand) and positions (add)."""

    def __init__(self, use="add"):
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 6))
        self.position_embeddings = nn.Parameter(torch.randn(1, 4, 6))
        self.use = use

    def forward(self, x):
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.proj(x)], 1)
        if self.use == "mul":
            return h * self.position_embeddings
        return h + self.position_embeddings


def test_broadcast_parameters_expand_and_add_match_reference():
    torch.manual_seed(0)
    _check(nn.Sequential(_Tokens(), nn.Tanh(), nn.Linear(6, 2)), _rand(5, 3, 4))


def test_broadcast_parameter_used_otherwise_is_refused_at_first_step():
    model = nn.Sequential(_Tokens("mul"), nn.Linear(6, 2))
    PerExampleClipper(model)
    with pytest.raises(InputError, match=r"parameter 0\.position_embeddings .*used by mul,"):
        model(torch.randn(2, 3, 4))
    assert torch._C._len_torch_function_stack() == 0  # the watch ended with the failed forward


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.w


@pytest.mark.parametrize("layer, fragment", [
    (nn.Bilinear(4, 4, 2), r"1 \(Bilinear: no per-example gradient rule"),
    (nn.MultiheadAttention(4, 2), r"1 \(MultiheadAttention: no per-example gradient rule"),
    (nn.ConvTranspose2d(4, 2, 3), r"1 \(ConvTranspose2d"),
    (nn.Embedding(5, 4, max_norm=1.0), r"1 \(Embedding: Embedding with max_norm"),
    (nn.Embedding(5, 4, scale_grad_by_freq=True), r"1 \(Embedding: Embedding with scale_grad_by_freq mixes"),
    (_Scale(), r"1 \(_Scale: no per-example gradient rule"),
])
def test_unsupported_layers_are_named_before_training(layer, fragment):
    model = nn.Sequential(nn.Linear(4, 4), layer)
    assert unsupported_layer(model) is not None
    with pytest.raises(InputError, match=r"DP-SGD cannot clip layer " + fragment):
        PerExampleClipper(model)
    layer.requires_grad_(False)  # frozen, it needs no per-example gradient
    assert unsupported_layer(model) is None


def test_unsupported_layer_refused_from_the_cli_before_training(tmp_path, monkeypatch, capsys):
    import yaml

    from torchshield.cli.app import run

    (tmp_path / "scalemodels.py").write_text(
        "import torch\n"
        "class Scale(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = torch.nn.Parameter(torch.ones(64))\n"
        "    def forward(self, x):\n"
        "        return x.flatten(1) * self.w\n"
        "def make(in_features, num_classes):\n"
        "    return torch.nn.Sequential(Scale(), torch.nn.Linear(in_features, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"type": "scalemodels:make"}, "data": "sklearn:digits",
        "optimizer": {"name": "sgd", "lr": 0.1},
        "epochs": 1, "batch_size": 64, "output": {"bundle": "out.tsb"},
        "privacy": {"epsilon": 3.0, "delta": 1e-5}}))
    assert run(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "cannot clip layer 0 (Scale" in err and "Traceback" not in err
    assert not (tmp_path / "out.tsb").exists()


class _FunctionalTie(nn.Module):
    """The embedding table reused by a matmul in the parent's forward, not through a module."""

    def __init__(self):
        super().__init__()
        self.emb, self.lin = nn.Embedding(11, 6), nn.Linear(6, 6)

    def forward(self, ids):
        return torch.tanh(self.lin(self.emb(ids))) @ self.emb.weight.t()


def test_a_parameter_used_outside_its_layer_is_refused_at_the_first_step():
    """Its hidden use would be missing from every per-example norm: under-clipping, refused."""
    torch.manual_seed(0)
    model = _FunctionalTie()
    clipper = PerExampleClipper(model)
    ids = torch.randint(0, 11, (4, 5))
    with pytest.raises(InputError, match=r"cannot clip parameter emb\.weight per example: part of its"):
        clipper.clipped_sum(_mse(model, (ids,)), 1.0)
    model.emb.weight.requires_grad_(False)  # frozen, nothing to clip
    sums = PerExampleClipper(model).clipped_sum(_mse(model, (ids,)), 1.0)
    assert set(sums) == {model.lin.weight, model.lin.bias}


def test_materialised_buffers_are_reused_across_steps_and_never_leak_a_step_into_the_next():
    """The CPU workspace hands the same per-example gradient buffers to every step: each step's
    norms and clipped sums still equal the one-example-at-a-time reference for its own batch. A
    smaller batch (Poisson sampling) uses the first rows of the same buffers; a larger one replaces
    them by larger ones, which later steps reuse."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    clipper = PerExampleClipper(model, strategy="materialise")
    storages = []
    try:
        for step, batch in enumerate((5, 5, 3, 7, 4)):
            x = torch.randn(batch, 6, 5, generator=torch.Generator().manual_seed(10 + step), dtype=torch.float64)
            ref_norms, ref_sums = reference(model, _mse, (x,), 1.0)
            sums = clipper.clipped_sum(_mse(model, (x,)), 1.0)
            for p, expected in ref_sums.items():
                torch.testing.assert_close(sums[p], expected, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(clipper.per_example_norms(_mse(model, (x,))), ref_norms)
            ws = clipper.workspace
            storages.append({b.data_ptr() for bufs in ws._free.values() for b in bufs}
                            | {b.data_ptr() for _, b in ws._taken})
    finally:
        clipper.close()
    assert len(storages[0]) == 2  # one buffer per weight shape
    assert storages[0] == storages[1] == storages[2]  # batch 3 used the rows of the batch-5 buffers
    assert len(storages[3]) == 2 and storages[4] == storages[3]  # batch 7 grew them; batch 4 reused those
    assert clipper.workspace._kept == 7 * (7 * 5 + 3 * 7)  # only the larger pair is counted
