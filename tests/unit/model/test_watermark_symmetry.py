"""White-box mark against a thief who knows the method: the network's symmetries, our own
obfuscation with another key, scrambled names; and no false positives on unrelated models."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy.stats import binom
from torch import nn
from watermark_digits import TEST, TRAIN, X, Y
from watermark_digits import mlp as _mlp
from watermark_digits import train as _train

from torchshield.crypto.keys import generate_master_key
from torchshield.model.obfuscate import obfuscate, obfuscate_module
from torchshield.model.watermark import make_regularizer, verify_whitebox
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD


@pytest.fixture(scope="module")
def marked():
    key = generate_master_key()
    model = _mlp(3)
    regs, record = make_regularizer({"method": "whitebox", "strength": 2.0}, model, key)
    _train(model, TRAIN, 15, regs)
    return model, record, key


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _outputs(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X[TEST])


def _permute_and_scale(model: nn.Module, *, scale: bool, seed: int) -> nn.Module:
    """What a thief does by hand: permute every hidden layer's units and (ReLU) rescale them by
    arbitrary positive factors, fixing the next layer so that the function is unchanged."""
    thief = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    linears = [m for m in thief if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for producer, consumer in zip(linears, linears[1:]):
            perm = torch.randperm(producer.out_features, generator=g)
            s = torch.exp(torch.randn(producer.out_features, generator=g)) if scale else torch.ones(len(perm))
            producer.weight.copy_(producer.weight[perm] * s[:, None])
            producer.bias.copy_(producer.bias[perm] * s)
            consumer.weight.copy_(consumer.weight[:, perm] / s[None, :])
    return thief


@pytest.mark.parametrize("scale", [False, True], ids=["permutation", "permutation+scaling"])
def test_mark_survives_function_preserving_permutation_and_rescaling(marked, scale):
    model, record, key = marked
    thief = _permute_and_scale(model, scale=scale, seed=7)
    assert torch.allclose(_outputs(thief), _outputs(model), atol=1e-4)
    assert not torch.equal(thief[0].weight, model[0].weight)
    verdict = verify_whitebox(_state(thief), record, key)
    base = verify_whitebox(_state(model), record, key)
    assert verdict.present and verdict.matches >= base.matches - 1, (verdict, base)


def test_mark_survives_our_obfuscation_with_the_thiefs_key(marked):
    model, record, key = marked
    thief = copy.deepcopy(model)
    obfuscate_module(thief, generate_master_key())  # permutes and scales by 2^k with another key
    assert torch.allclose(_outputs(thief), _outputs(model), atol=1e-4)
    assert not torch.equal(thief[0].weight, model[0].weight)
    assert verify_whitebox(_state(thief), record, key).present


def test_scrambled_names_are_searched_with_a_bonferroni_correction(marked):
    model, record, key = marked
    tensors, _ = obfuscate(copy.deepcopy(model), generate_master_key())
    assert not set(tensors) & set(record.layers)
    scrambled = verify_whitebox(tensors, record, key)
    named = verify_whitebox(_state(model), record, key)
    candidates = sum(1 for t in tensors.values() if t.dim() == 2 and t.shape[1] == 64)
    assert candidates == 2  # 0.weight (128 x 64) and 4.weight (10 x 64): both read 64 inputs
    assert scrambled.present
    assert scrambled.p_value == pytest.approx(min(1.0, candidates * binom.sf(scrambled.matches - 1, 64, 0.5)))
    assert scrambled.p_value >= named.p_value


NULL_MODELS = 60
LOOSE = 0.01


@pytest.fixture(scope="module")
def unrelated():
    """60 independently initialised and (briefly) trained models: none ever saw the secret."""
    return [_state(_train(_mlp(1000 + seed), TRAIN, 1)) for seed in range(NULL_MODELS)]


def _max_count(n: int, p: float, alpha: float = 1e-6) -> int:
    """The smallest k with P[Binomial(n, p) > k] < alpha: more false positives than k would
    contradict the stated rate with confidence 1 - alpha."""
    return int(binom.isf(alpha, n, p)) + 1


def test_false_positive_rate_over_many_independent_models_is_within_its_bound(marked, unrelated):
    _, record, key = marked
    verdicts = [verify_whitebox(state, record, key) for state in unrelated]
    # at the product threshold: P[any of 60 passes] <= 60 * 1e-6
    assert not any(v.present for v in verdicts)
    # at a loose threshold the exact null is visible: #(p < 0.01) ~ at most Binomial(60, 0.01)
    assert sum(v.p_value < LOOSE for v in verdicts) <= _max_count(NULL_MODELS, LOOSE)
    # and the bit agreement is a fair coin: mean of 60 x 64 bits within 6 sd of 1/2
    bits = sum(v.matches for v in verdicts)
    total = sum(v.total for v in verdicts)
    assert abs(bits / total - 0.5) <= 6 * (0.25 / total) ** 0.5
    assert DEFAULT_P_THRESHOLD == record.threshold


def test_search_over_many_candidates_cannot_manufacture_a_mark(marked, unrelated):
    """Adversarial: the candidate search is handed an unrelated 'model' made of all 60 unrelated
    first layers under scrambled names, and each of them permuted and rescaled. The best of 120
    decodings is corrected by 120, so the verdict stays absent and its p-value is a valid bound."""
    _, record, key = marked
    g = torch.Generator().manual_seed(11)
    pool = {}
    for i, state in enumerate(unrelated):
        w = state["0.weight"]
        pool[f"t{i:03d}"] = w
        perm = torch.randperm(w.shape[0], generator=g)
        pool[f"u{i:03d}"] = w[perm] * torch.exp(torch.randn(w.shape[0], 1, generator=g))
    verdict = verify_whitebox(pool, record, key)
    assert not verdict.present
    best = max(verify_whitebox({"0.weight": w}, record, key).matches for w in pool.values())
    assert verdict.matches == best
    assert verdict.p_value == pytest.approx(min(1.0, len(pool) * binom.sf(best - 1, 64, 0.5)))


def test_marking_costs_little_accuracy(marked):
    model, _, _ = marked
    plain = _train(_mlp(3), TRAIN, 15)
    acc = lambda m: float((_outputs(m).argmax(1) == Y[TEST]).float().mean())  # noqa: E731
    assert acc(model) >= acc(plain) - 0.03


def test_token_model_mark_lives_in_the_embedding_and_survives_residual_stream_obfuscation():
    """A BERT's first Linear reads the residual stream, which `obfuscate` now permutes; the default
    carrier of a token model is the word-embedding table read by columns (hidden units), whose rows
    (token ids) nobody can reorder without changing the tokenizer."""
    transformers = pytest.importorskip("transformers")
    from torchshield.model.obfuscate import obfuscate_model

    cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=48, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(11)
    model = transformers.BertForSequenceClassification(cfg).eval()
    key = generate_master_key()
    regs, record = make_regularizer({"method": "whitebox", "strength": 2.0}, model, key)
    assert record.params["carrier"] == "embedding-unit-mean" and record.params["bits"] == 60
    assert list(record.layers) == ["bert.embeddings.word_embeddings.weight"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(240):  # the regulariser alone (it acts on one call in four)
        loss = regs[0](model)
        if loss.requires_grad:
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert verify_whitebox(_state(model), record, key).present
    thief = obfuscate_model(model, generate_master_key())  # residual stream permuted, names scrambled
    assert thief.units_by_kind["residual stream"] > 0
    verdict = verify_whitebox(thief.tensors, record, key)
    assert verdict.present and verdict.p_value < DEFAULT_P_THRESHOLD
    torch.manual_seed(12)
    unrelated = transformers.BertForSequenceClassification(cfg)
    assert not verify_whitebox(_state(unrelated), record, key).present


def test_cnn_stem_mark_uses_the_gram_carrier_and_survives_channel_permutation_and_rescaling():
    """A CNN stem reads 3 x 3 x 3 = 27 inputs: too few entries for unit-mean to hold 27+ bits, so
    the default is the unit-gram carrier (378 entries), with the same invariances."""
    from byom_models import ResNetMini

    from torchshield.model.obfuscate import obfuscate_model

    torch.manual_seed(13)
    model = ResNetMini(num_classes=10).eval()
    key = generate_master_key()
    regs, record = make_regularizer({"method": "whitebox"}, model, key)
    assert record.params["carrier"] == "unit-gram" and list(record.layers) == ["conv1.weight"]
    assert record.params["bits"] == 128
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(400):
        loss = regs[0](model)
        if loss.requires_grad:
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert verify_whitebox(_state(model), record, key).present
    thief = obfuscate_model(model, generate_master_key())  # stem channels move with the residual stream
    assert verify_whitebox(thief.tensors, record, key).present
    scaled = _state(model)
    s = torch.exp(torch.randn(8, generator=torch.Generator().manual_seed(14)))
    scaled["conv1.weight"] = scaled["conv1.weight"] * s[:, None, None, None]  # the BatchNorm after it absorbs s
    assert verify_whitebox(scaled, record, key).present
    torch.manual_seed(15)
    assert not verify_whitebox(_state(ResNetMini(num_classes=10)), record, key).present
