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

Not covered: the residual stream (hidden size) of HF models; it runs through embeddings, every
LayerNorm and every block and a permutation would have to cover all of them consistently (the
fx planner does it for traceable CNNs). Permutations are exact on the weights; outputs agree to
float rounding because sums inside matrix products run in another order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["transformer_groups"]

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
