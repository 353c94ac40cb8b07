"""Per-example clipping on the architectures people fine-tune: BERT, GPT-2 (tied LM head), ViT, ResNet.

Each check compares the engine's per-example gradient norms and clipped gradient sum with the
one-example-at-a-time reference (``per_example_reference.py``) in float64, for the per-layer cost
choice and for each path forced everywhere (ghost norms / materialised per-example gradients)."""

from __future__ import annotations

import pytest
import torch
from byom_models import BasicBlock as _BasicBlock
from per_example_reference import assert_matches
from torch import nn

from torchshield.train.per_example import PerExampleClipper, unsupported_layer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

STRATEGIES = ["auto", "ghost", "materialise"]


def _classify(model, batch):
    out = model(batch[0])
    logits = out.logits if hasattr(out, "logits") else out
    return nn.functional.cross_entropy(logits, batch[1], reduction="none")


def _causal_lm(model, batch):
    ids = batch[0]
    logits = model(input_ids=ids).logits[:, :-1]
    tokens = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                         reduction="none")
    return tokens.view(len(ids), -1).mean(1)


def _bert():
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=24, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, num_labels=3)
    return transformers.BertForSequenceClassification(cfg)


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                  eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: one parameter, two uses
    return model


def _vit():
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16,
                                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                                 num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.ViTForImageClassification(cfg)


def BasicBlock(c_in: int, c_out: int, stride: int) -> nn.Module:  # noqa: N802 - stands for the class
    """torchvision's BasicBlock (tests/byom_models.py), BatchNorm -> GroupNorm for DP, residual in place."""
    return _BasicBlock(c_in, c_out, stride, norm=lambda c: nn.GroupNorm(2, c))


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (7x7/2 stem, max-pool, 4 stages of 2 BasicBlocks, avg-pool, fc)."""

    def __init__(self, widths=(64, 128, 256, 512), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.GroupNorm(2, widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, c_in = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [BasicBlock(c_in, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            c_in = w
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(self.layers(x)).flatten(1))


def _batch(kind: str, n: int = 5):
    g = torch.Generator().manual_seed(1)
    if kind in ("bert", "gpt2"):
        ids = torch.randint(0, 40, (n, 9), generator=g)
        return (ids, torch.randint(0, 3, (n,), generator=g)) if kind == "bert" else (ids,)
    side = 8 if kind == "vit" else 16
    x = torch.randn(n, 3, side, side, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (n,), generator=g)


MODELS = {
    "bert": (_bert, _classify),
    "gpt2": (_gpt2, _causal_lm),
    "vit": (_vit, _classify),
    "resnet": (lambda: ResNet18(widths=(4, 8, 8, 8), num_classes=3), _classify),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", list(MODELS))
def test_norms_and_clipped_sum_equal_one_example_at_a_time(kind, strategy):
    torch.manual_seed(0)
    make, loss_fn = MODELS[kind]
    model = make().double().train()
    assert unsupported_layer(model) is None  # no Opacus fallback for any of them
    norms = assert_matches(model, loss_fn, _batch(kind), strategy)
    assert (norms > norms.median()).any() and (norms < norms.median()).any()  # some clipped, some not


@pytest.mark.parametrize("kind", list(MODELS))
def test_float32_matches_the_reference_to_1e_4(kind):
    torch.manual_seed(0)
    make, loss_fn = MODELS[kind]
    batch = tuple(t.float() if t.is_floating_point() else t for t in _batch(kind))
    assert_matches(make().train(), loss_fn, batch, rtol=1e-4)


def test_model_code_runs_unchanged_under_the_engine():
    """The in-place residual and the [1, L] position buffer are used as written; nothing is patched."""
    torch.manual_seed(0)
    model = ResNet18(widths=(4, 8, 8, 8), num_classes=3)
    clipper = PerExampleClipper(model)
    assert model.relu.inplace and model.layers[0].relu.inplace
    clipper.close()
    bert = _bert()
    buffer = bert.bert.embeddings.position_ids
    clipper = PerExampleClipper(bert)
    clipper.clipped_sum(_classify(bert, _batch("bert")), 1.0)
    clipper.close()
    assert bert.bert.embeddings.position_ids is buffer and buffer.shape[0] == 1


def test_frozen_embeddings_and_layer_norms_are_not_counted():
    """Fine-tuning only the top: frozen parameters have no clipped sum and no share of the norm."""
    torch.manual_seed(0)
    model = _bert().double().train()
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    for layer in model.bert.encoder.layer:
        layer.attention.output.LayerNorm.weight.requires_grad_(False)  # weight frozen, bias trained
    assert_matches(model, _classify, _batch("bert"))


def test_gpt2_vocabulary_sized_lm_head_uses_the_ghost_norm(monkeypatch):
    """Above the materialisation cap, the tied head takes the ghost path (never a [B, V, d] tensor)."""
    import torchshield.train.per_example as pe

    torch.manual_seed(0)
    model = _gpt2().double().train()
    seen = []
    original = pe._Dense.__init__

    def spy(self, param, grads):
        seen.append(tuple(grads.shape))
        original(self, param, grads)
    monkeypatch.setattr(pe._Dense, "__init__", spy)
    monkeypatch.setattr(pe, "_GHOST_FACTOR", 0)  # by time alone, every Linear/Conv1D use is materialised
    for cap, materialised in ((1 << 30, True), (5 * 40 * 16 - 1, False)):  # a head use is [5, 40, 16]
        monkeypatch.setattr(pe, "_MATERIALISE_CAP", cap)
        seen.clear()
        assert_matches(model, _causal_lm, _batch("gpt2"))
        assert ((5, 40, 16) in seen) == materialised


@pytest.mark.parametrize("kind", list(MODELS))
def test_dp_training_runs_through_the_loop_with_our_engine(kind):
    """The crash reports: DP-SGD on a ResNet (in-place residual), BERT and GPT-2 ([1, L] position ids)."""
    from torchshield.train import fit
    from torchshield.train.dp import PrivacyConfig, make_private

    torch.manual_seed(0)
    make, loss_fn = MODELS[kind]
    model = make()
    batch = _batch(kind, n=16)
    x = batch[0].float() if batch[0].is_floating_point() else batch[0]
    y = batch[1] if len(batch) > 1 else torch.zeros(len(x), dtype=torch.long)
    engine = make_private(model, config=PrivacyConfig(epsilon=50.0, delta=1e-3, noise_multiplier=1.0, seed=0,
                                                                   insecure_seed_for_tests=True),
                          dataset_size=16, batch_size=8, epochs=1)
    assert engine.mode == "ghost" and not engine.messages
    before = [p.detach().clone() for p in engine.model.parameters()]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    result = fit(engine.model, loader, epochs=1, optimizer=torch.optim.SGD(engine.model.parameters(), 0.01),
                 loss_fn=lambda m, xb, yb: loss_fn(m, (xb, yb)), privacy=engine, progress=False)
    engine.close()
    assert result.steps == 2 and engine.record()["steps"] == 2
    after = list(engine.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert all(not torch.equal(b, p) for b, p in zip(before, after))  # noise reaches every parameter
