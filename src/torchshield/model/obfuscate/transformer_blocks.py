"""Permutations inside Hugging Face transformer blocks, found from their module structure.

HF models do not trace with plain ``torch.fx`` (``transformers.utils.fx`` traces some, per
architecture and version), so the blocks are recognised by the attributes HF's own code uses:

* BERT-style attention (``BertAttention``: ``self.query/key/value`` Linear, ``output.dense``):
  the heads are permuted as wholes (rows of Q, K, V in head blocks, columns of the output
  projection in the same blocks), and inside each head the query/key dimensions get one shared
  permutation and the value dimensions another (a dot product and a weighted sum do not see the
  order of their terms).
* GPT-2-style attention (``GPT2Attention``: fused ``c_attn`` Conv1D of width 3 x hidden,
  ``c_proj``): the same, on the three thirds of ``c_attn``'s output axis (Conv1D stores weights
  as ``in x out``).
* Transformer MLPs (``BertLayer``'s ``intermediate.dense`` -> ``output.dense``; ``GPT2MLP``'s
  ``c_fc`` -> ``c_proj``): the intermediate units, through the elementwise activation.

* The residual stream (hidden size, ``residual_groups``): one permutation shared by everything that
  reads or writes it: the word, position and token-type embeddings (columns), every LayerNorm
  (a LayerNorm's mean and variance do not see the order of the features; its weight and bias
  follow), the input side of Q, K, V and of the MLP's first layer, the output side (rows and
  bias) of the attention output projection and of the MLP's second layer, the final LayerNorm,
  and the head that reads the stream (GPT-2's ``lm_head``, tied to ``wte`` and permuted the same
  way, so the tie holds; ``score``; BERT's pooler input). BERT's pooler output gets its own
  permutation through ``tanh`` into the classifier. Only heads of a known class are covered
  (``_HEADS``); a bare base model returns the stream itself, so its stream is left alone, and
  so is any model with a head we do not know (the reason is returned, not guessed).

Permutations are exact on the weights; outputs agree to float rounding because sums inside
matrix products and LayerNorm statistics run in another order. ``obfuscate_model`` also runs the
original and the permuted weights on the same probe tokens and refuses a plan whose logits differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["hidden_size", "residual_groups", "transformer_groups"]

# (rows: (tensor, axis, block)), perm builder from an rng
Group = tuple[list[tuple[str, int, int]], Callable[[Any], list[int]]]


def _plain(units: int) -> Callable[[Any], list[int]]:
    return lambda rng: [int(u) for u in rng.permutation(units)]


def _with_bias(module: Any, prefix: str, axis_w: int) -> list[tuple[str, int, int]]:
    rows = [(f"{prefix}.weight", axis_w, 1)]
    if getattr(module, "bias", None) is not None:
        rows.append((f"{prefix}.bias", 0, 1))
    return rows


def transformer_groups(model: nn.Module) -> list[Group]:
    """Groups for every recognised attention block and MLP in ``model`` (may be empty)."""
    groups: list[Group] = []
    for name, mod in model.named_modules():
        p = f"{name}." if name else ""
        groups.extend(_bert_attention(mod, p) + _bert_mlp(mod, p) + _gpt2_attention(mod, p) + _gpt2_mlp(mod, p))
    return groups


def _bert_attention(mod: Any, p: str) -> list[Group]:
    self_attn, out = getattr(mod, "self", None), getattr(getattr(mod, "output", None), "dense", None)
    if self_attn is None or out is None or not all(hasattr(self_attn, a) for a in ("query", "key", "value")):
        return []
    heads = int(getattr(self_attn, "num_attention_heads", 0))
    dim = int(getattr(self_attn, "attention_head_size", 0))
    if not heads or self_attn.query.out_features != heads * dim or getattr(
            self_attn, "position_embedding_type", "absolute") != "absolute":
        return []
    s = f"{p}self"
    qk = _with_bias(self_attn.query, f"{s}.query", 0) + _with_bias(self_attn.key, f"{s}.key", 0)
    vo = _with_bias(self_attn.value, f"{s}.value", 0) + [(f"{p}output.dense.weight", 1, 1)]
    build = _heads(heads, dim)  # heads move as wholes in Q, K, V and O alike: one head order for both groups
    return [(qk, build), (vo, build)]


def _heads(heads: int, dim: int) -> Callable[[Any], list[int]]:
    """Per call, a permutation of ``heads x dim`` units: the head order drawn once and shared by
    every call, the order inside each head drawn afresh."""
    state: dict[str, Any] = {}

    def build(rng: Any) -> list[int]:
        if "order" not in state:
            state["order"] = rng.permutation(heads)
        order = state["order"]
        inner = [rng.permutation(dim) for _ in range(heads)]
        return [int(order[h]) * dim + int(inner[h][d]) for h in range(heads) for d in range(dim)]

    return build


def _bert_mlp(mod: Any, p: str) -> list[Group]:
    inter = getattr(getattr(mod, "intermediate", None), "dense", None)
    out = getattr(getattr(mod, "output", None), "dense", None)
    if inter is None or out is None or inter.out_features != out.in_features:
        return []
    rows = _with_bias(inter, f"{p}intermediate.dense", 0) + [(f"{p}output.dense.weight", 1, 1)]
    return [(rows, _plain(inter.out_features))]


def _gpt2_attention(mod: Any, p: str) -> list[Group]:
    c_attn, c_proj = getattr(mod, "c_attn", None), getattr(mod, "c_proj", None)
    heads, dim = int(getattr(mod, "num_heads", 0)), int(getattr(mod, "head_dim", 0))
    if c_attn is None or c_proj is None or not heads or getattr(mod, "is_cross_attention", False):
        return []
    if tuple(c_attn.weight.shape[1:]) != (3 * heads * dim,) or c_proj.weight.shape[0] != heads * dim:
        return []
    # Q and K share one permutation (heads and inner dims), V and the output projection another;
    # the head order must be the same in all four, so it is drawn once.
    state: dict[str, Any] = {}
    one = _heads(heads, dim)

    def qkv(rng: Any) -> list[int]:
        qk, v = one(rng), one(rng)
        state["v"] = v
        width = heads * dim
        return qk + [width + u for u in qk] + [2 * width + u for u in v]

    def proj(rng: Any) -> list[int]:
        return list(state["v"])

    return [(_with_bias(c_attn, f"{p}c_attn", 1), qkv), ([(f"{p}c_proj.weight", 0, 1)], proj)]


def _gpt2_mlp(mod: Any, p: str) -> list[Group]:
    c_fc, c_proj = getattr(mod, "c_fc", None), getattr(mod, "c_proj", None)
    if c_fc is None or c_proj is None or getattr(c_fc, "nf", None) is None:
        return []
    units = int(c_fc.nf)
    if c_proj.weight.shape[0] != units:
        return []
    return [(_with_bias(c_fc, f"{p}c_fc", 1) + [(f"{p}c_proj.weight", 0, 1)], _plain(units))]


# Heads that read the residual stream, per model class: (module path, "stream" = reads the stream's
# last hidden state, "pooled" = reads BERT's pooler output, which has its own permutation).
_HEADS: dict[str, tuple[tuple[str, str], ...]] = {
    "BertForSequenceClassification": (("classifier", "pooled"),),
    "BertForMultipleChoice": (("classifier", "pooled"),),
    "BertForTokenClassification": (("classifier", "stream"),),
    "BertForQuestionAnswering": (("qa_outputs", "stream"),),
    "GPT2LMHeadModel": (("lm_head", "stream"),),
    "GPT2ForSequenceClassification": (("score", "stream"),),
    "GPT2ForTokenClassification": (("classifier", "stream"),),
}


def hidden_size(model: nn.Module) -> int:
    """The width of the residual stream (``config.hidden_size``; GPT-2 maps it to ``n_embd``)."""
    return int(getattr(getattr(model, "config", None), "hidden_size", 0) or 0)


def residual_groups(model: nn.Module) -> tuple[list[Group], str]:
    """The residual-stream group (and BERT's pooler group) of a known HF model, or no group and why.

    Returns ``(groups, note)``: ``note`` says what was covered or why the stream stays."""
    cls = type(model).__name__
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    base = getattr(model, prefix, None) if prefix else None
    width = hidden_size(model)
    if base is None or not width:
        return [], (f"a bare {cls} returns its hidden states, so permuting the residual stream would change "
                    "its output" if width else f"{cls} has no config.hidden_size")
    if cls not in _HEADS:
        return [], f"the residual stream is left alone: {cls} has a head this release does not map"
    p = f"{prefix}."
    rows = _bert_stream(base, p, width) if hasattr(base, "encoder") else _gpt2_stream(base, p, width)
    if rows is None:
        return [], f"the residual stream is left alone: {cls}'s blocks are not of a known layout"
    groups: list[Group] = []
    for path, reads in _HEADS[cls]:
        head = getattr(model, path, None)
        if head is None or getattr(head, "in_features", None) != width:
            return [], f"the residual stream is left alone: {cls}.{path} is not a Linear layer on the stream"
        if reads == "stream":
            rows.append((f"{path}.weight", 1, 1))
            continue
        pooler = getattr(getattr(base, "pooler", None), "dense", None)
        if pooler is None or pooler.in_features != width:
            return [], f"the residual stream is left alone: {cls} has no pooler of width {width}"
        rows.append((f"{p}pooler.dense.weight", 1, 1))
        groups.append((_with_bias(pooler, f"{p}pooler.dense", 0) + [(f"{path}.weight", 1, 1)],
                       _plain(pooler.out_features)))
    return [(rows, _plain(width)), *groups], f"residual stream of width {width} permuted"


def _norm(module: Any, prefix: str, width: int) -> list[tuple[str, int, int]] | None:
    shape = tuple(getattr(module, "normalized_shape", ()) or ())
    if shape != (width,):
        return None
    return [(f"{prefix}.{t}", 0, 1) for t in ("weight", "bias") if getattr(module, t, None) is not None]


def _bert_stream(base: Any, p: str, width: int) -> list[tuple[str, int, int]] | None:
    emb = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if emb is None or layers is None or getattr(base.config, "position_embedding_type", "absolute") != "absolute":
        return None
    rows: list[tuple[str, int, int]] = []
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        if getattr(emb, table, None) is not None:
            rows.append((f"{p}embeddings.{table}.weight", 1, 1))
    norm = _norm(getattr(emb, "LayerNorm", None), f"{p}embeddings.LayerNorm", width)
    if norm is None:
        return None
    rows += norm
    for i, layer in enumerate(layers):
        q = f"{p}encoder.layer.{i}."
        att = getattr(layer, "attention", None)
        if att is None or getattr(layer, "crossattention", None) is not None or not hasattr(layer, "intermediate"):
            return None
        parts = [_norm(att.output.LayerNorm, f"{q}attention.output.LayerNorm", width),
                 _norm(layer.output.LayerNorm, f"{q}output.LayerNorm", width)]
        if any(part is None for part in parts):
            return None
        rows += [(f"{q}attention.self.{n}.weight", 1, 1) for n in ("query", "key", "value")]
        rows += _with_bias(att.output.dense, f"{q}attention.output.dense", 0)
        rows += [(f"{q}intermediate.dense.weight", 1, 1)]
        rows += _with_bias(layer.output.dense, f"{q}output.dense", 0)
        rows += [r for part in parts for r in part or []]
    return rows


def _gpt2_stream(base: Any, p: str, width: int) -> list[tuple[str, int, int]] | None:
    blocks = getattr(base, "h", None)
    if getattr(base, "wte", None) is None or blocks is None:
        return None
    rows: list[tuple[str, int, int]] = [(f"{p}wte.weight", 1, 1)]
    if getattr(base, "wpe", None) is not None:
        rows.append((f"{p}wpe.weight", 1, 1))
    for i, block in enumerate(blocks):
        q = f"{p}h.{i}."
        if getattr(block, "crossattention", None) is not None:
            return None
        norms = [_norm(getattr(block, n, None), f"{q}{n}", width) for n in ("ln_1", "ln_2")]
        if any(n is None for n in norms):
            return None
        rows += [r for n in norms for r in n or []]
        # Conv1D stores weights as in x out: the stream is axis 0 where it is read, axis 1 where written
        rows += [(f"{q}attn.c_attn.weight", 0, 1), (f"{q}mlp.c_fc.weight", 0, 1)]
        for proj in ("attn.c_proj", "mlp.c_proj"):
            rows.append((f"{q}{proj}.weight", 1, 1))
            if getattr(block.get_submodule(proj), "bias", None) is not None:
                rows.append((f"{q}{proj}.bias", 0, 1))
    final = _norm(getattr(base, "ln_f", None), f"{p}ln_f", width)
    return None if final is None else rows + final
