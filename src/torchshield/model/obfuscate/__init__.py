"""Function-preserving obfuscation: permute hidden units, rescale them, scramble names.

Why: a stolen copy of an obfuscated model computes exactly what ours computes, but its weight
tensors and parameter names no longer line up with the original, so it cannot be diffed
against, or spliced with, our published checkpoints, and it does not match a hash of them.
Only the key holder can map it back (``deobfuscate``), bit for bit.

Threat model and limits: this hides *correspondence*, not the function. Anyone holding the
obfuscated weights can still run, fine-tune or distil the model; an adversary who suspects a
permutation can undo it by matching units across models (weight matching), so this is a
speed bump against casual diffing and name-based tooling, not encryption. Use bundle
encryption for confidentiality.

How it stays exact. Three planners, chosen by the model's shape (``_plan_links``):

* an ``nn.Sequential`` of known layers: for each chain ``producer (Linear/Conv) -> per-unit layers
  -> consumer (Linear/Conv)`` the producer's output units are permuted and the consumer's input
  units follow the same permutation; per-unit layers in between (elementwise activations,
  BatchNorm, LayerNorm over the features, channel-wise pooling, Flatten) have their parameters
  permuted too. When every layer in between is positively homogeneous (ReLU, LeakyReLU, pooling,
  Dropout), unit ``i`` is also scaled by ``2^k_i`` on the way in and ``2^-k_i`` on the way out:
  powers of two make the scaling exact in floating point, so reversing it restores the original
  bits. Any other layer between two weight layers raises an error that names it.
* any other module, from its ``torch.fx`` graph (``graph.py``): groups of unit axes joined by
  residual additions, permutation only.
* Hugging Face BERT/GPT-2-style transformers, from their module structure
  (``transformer_blocks.py``): attention heads, MLP intermediate units and, for the heads of a
  known class, the residual stream (embeddings, every LayerNorm, every projection that reads
  or writes it, the head; tied embeddings stay tied). The permuted weights are run against the
  original on probe tokens and a plan whose logits differ is refused.

A plan that moves nothing, or whose result is byte-identical to the input, is refused
(InputError naming why): obfuscation never reports success for a no-op, and
``obfuscate_model`` returns counts of what changed.

The plan (permutations, scale exponents, name map) is sealed under the master key
(``crypto.envelope.seal``) and kept in the bundle manifest; nothing about it is stored in clear.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchshield.errors import FormatError, InputError, IntegrityError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchshield.crypto.keys import MasterKey

__all__ = ["Obfuscation", "deobfuscate", "obfuscate", "obfuscate_model", "obfuscate_module", "torch_equal"]

_VERSION = 1
_MAX_EXPONENT = 2  # unit scales are 2^k, k in [-2, 2]


@dataclass
class _Op:
    """One transform of one tensor: permute (and scale) an axis viewed as ``units x block``."""

    tensor: str
    axis: int
    perm: int  # index into the plan's permutation list
    block: int = 1
    scale: int | None = None  # index into the plan's exponent list
    power: int = 1  # +1 multiplies by 2^k (producer side), -1 divides (consumer side)


@dataclass
class _Plan:
    perms: list[list[int]] = field(default_factory=list)
    exps: list[list[int]] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # scrambled -> original
    kinds: list[str] = field(default_factory=list)  # what each permutation moves (counts only)
    note: str = ""  # what a planner covered or left alone (not sealed)

    def to_json(self) -> bytes:
        return json.dumps({"perms": self.perms, "exps": self.exps, "names": self.names, "kinds": self.kinds,
                           "ops": [op.__dict__ for op in self.ops]}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> _Plan:
        doc = json.loads(raw)
        return cls(perms=doc["perms"], exps=doc["exps"], names=doc["names"], kinds=list(doc.get("kinds") or []),
                   ops=[_Op(**op) for op in doc["ops"]])


def _flatten_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as the ordered list of leaf layers its forward runs (nested Sequentials only)."""
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise InputError(f"cannot safely permute a {type(model).__name__}: only nn.Sequential chains "
                         "have a known order of layers", hint="wrap the layers in nn.Sequential")
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            out.extend((f"{name}.{sub}", mod) for sub, mod in _flatten_chain(child))
        else:
            out.append((name, child))
    return out


def _kinds() -> dict[str, tuple[type, ...]]:
    from torch import nn

    return {
        "weight": (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d),
        # elementwise and positively homogeneous: f(s x) = s f(x) for s > 0
        "homogeneous": (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                        nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                        nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d),
        "elementwise": (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Mish, nn.Hardtanh,
                        nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SELU, nn.CELU, nn.Softsign),
        "norm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm),
        "flatten": (nn.Flatten,),
    }


def _units(layer: nn.Module) -> int:
    weight: Any = layer.weight
    return int(weight.shape[0])


def _plan_links(model: nn.Module, rng: Any) -> _Plan:
    """Plan the permutations for ``model``: a chain of known layers (with power-of-two scaling),
    a Hugging Face transformer (heads, MLP units), or any other module through its fx graph."""
    from torch import nn

    from torchshield.model.obfuscate.transformer_blocks import residual_groups, transformer_groups

    if isinstance(model, nn.Sequential) and _is_known_chain(model):
        plan = _plan_chain(model, rng)
        why = "it has fewer than two Linear/Conv layers in a row"
    elif hasattr(model, "config") and getattr(model.config, "model_type", None):
        plan = _plan_groups(transformer_groups(model), rng, kind="attention heads / MLP units")
        stream, note = residual_groups(model)
        plan = _plan_groups(stream, rng, kind="residual stream", into=plan)
        plan.note = note
        why = (f"no attention block or MLP of a known layout was found in this "
               f"{getattr(model.config, 'model_type', '?')} model (BERT- and GPT-2-style blocks are supported)")
    else:
        plan, why = _plan_graph(model, rng)
    if not plan.ops:
        raise InputError(f"nothing in this {type(model).__name__} can be permuted without changing its "
                         f"outputs: {why}", hint="obfuscation needs hidden units between two weight layers")
    return plan


def _is_known_chain(model: nn.Module) -> bool:
    known = tuple(t for kinds in _kinds().values() for t in kinds)
    try:
        return all(isinstance(layer, known) for _, layer in _flatten_chain(model))
    except InputError:
        return False


def _plan_groups(groups: list[tuple[list[tuple[str, int, int]], Any]], rng: Any, *, kind: str = "hidden units",
                 into: _Plan | None = None) -> _Plan:
    """One permutation per group, applied to every (tensor, axis, block) member; never the identity."""
    plan = into if into is not None else _Plan()
    for rows, build in groups:
        perm = [int(u) for u in build(rng)]
        if len(perm) < 2:
            continue
        while perm == sorted(perm):
            perm = [int(u) for u in build(rng)]
        pid = len(plan.perms)
        plan.perms.append(perm)
        plan.kinds.append(kind)
        plan.ops.extend(_Op(tensor, axis, pid, block) for tensor, axis, block in rows)
    return plan


def _plan_graph(model: nn.Module, rng: Any) -> tuple[_Plan, str]:
    from torchshield.model.obfuscate.graph import trace_groups

    groups = trace_groups(model)
    free = [g for g in groups if not g.frozen_by and g.units >= 2]
    plan = _plan_groups([(g.rows, lambda r, n=g.units: r.permutation(n)) for g in free], rng)
    reasons = sorted({why for g in groups for why in g.frozen_by})
    why = ("its hidden units are pinned by " + "; ".join(reasons[:3])
           if reasons else "it has fewer than two Linear/Conv layers in a row")
    return plan, why


def _plan_chain(model: nn.Module, rng: Any) -> _Plan:
    """Walk the chain and plan a permutation (and scales) for every producer -> consumer link."""

    kinds = _kinds()
    plan = _Plan()
    producer: tuple[str, nn.Module] | None = None
    between: list[tuple[str, nn.Module]] = []
    for name, layer in _flatten_chain(model):
        if isinstance(layer, kinds["weight"]):
            if getattr(layer, "groups", 1) != 1:
                raise InputError(f"layer {name!r} is a grouped convolution; it cannot be safely permuted")
            if producer is not None:
                _link(plan, producer, between, (name, layer), rng, kinds)
            producer, between = (name, layer), []
        elif producer is not None:
            between.append((name, layer))  # checked in _link once a consumer follows
    return plan


def _link(plan: _Plan, producer: tuple[str, nn.Module], between: list[tuple[str, nn.Module]],
          consumer: tuple[str, nn.Module], rng: Any, kinds: dict[str, tuple[type, ...]]) -> None:
    from torch import nn

    pname, player = producer
    cname, clayer = consumer
    units = _units(player)
    block, scalable = 1, True
    for name, layer in between:
        if isinstance(layer, kinds["flatten"]):
            if layer.start_dim != 1 or not isinstance(clayer, nn.Linear):
                raise InputError(f"layer {name!r} (Flatten) must flatten from dim 1 into a Linear layer "
                                 "for the model to be safely permuted")
            if clayer.in_features % units:
                raise InputError(f"layer {cname!r} takes {clayer.in_features} inputs, not a multiple of the "
                                 f"{units} channels of {pname!r}; cannot permute across {name!r}")
            block = clayer.in_features // units
        elif isinstance(layer, kinds["norm"]):
            scalable = False
            if isinstance(layer, nn.LayerNorm) and int(layer.normalized_shape[0]) != units:
                raise InputError(f"layer {name!r} (LayerNorm) does not normalise over the {units} units of "
                                 f"{pname!r}; the model cannot be safely permuted")
        elif isinstance(layer, kinds["elementwise"]):
            scalable = False
        elif not isinstance(layer, kinds["homogeneous"]):
            raise InputError(f"layer {name!r} ({type(layer).__name__}) between {pname!r} and {cname!r} is not "
                             "known to act per unit; the model cannot be safely permuted")
    cin = clayer.in_features if isinstance(clayer, nn.Linear) else clayer.in_channels
    if cin != units * block:
        raise InputError(f"layer {cname!r} takes {cin} inputs but {pname!r} gives {units}; cannot permute")
    pid = len(plan.perms)
    plan.perms.append(rng.permutation(units).tolist())
    plan.kinds.append("hidden units")
    sid = None
    if scalable:
        sid = len(plan.exps)
        plan.exps.append(rng.integers(-_MAX_EXPONENT, _MAX_EXPONENT + 1, size=units).tolist())
    for suffix in ("weight", "bias"):
        if getattr(player, suffix, None) is not None:
            plan.ops.append(_Op(f"{pname}.{suffix}", 0, pid, 1, sid, 1))
    for name, layer in between:
        if isinstance(layer, kinds["norm"]):
            for tname, _ in list(layer.named_parameters(recurse=False)) + list(layer.named_buffers(recurse=False)):
                if tname != "num_batches_tracked":
                    plan.ops.append(_Op(f"{name}.{tname}", 0, pid))
    plan.ops.append(_Op(f"{cname}.weight", 1, pid, block, sid, -1))


def _apply(tensors: dict[str, torch.Tensor], plan: _Plan, *, inverse: bool) -> dict[str, torch.Tensor]:
    import torch

    out = dict(tensors)
    for op in reversed(plan.ops) if inverse else plan.ops:
        t = out[op.tensor]
        shape = t.shape
        view = t.reshape(*shape[:op.axis], -1, op.block, *shape[op.axis + 1:])
        perm = torch.tensor(plan.perms[op.perm], dtype=torch.long)
        scale = None
        if op.scale is not None:
            exps = torch.tensor(plan.exps[op.scale], dtype=torch.float64) * op.power
            scale = torch.pow(2.0, exps).to(t.dtype).reshape(-1, *([1] * (view.dim() - op.axis - 1)))
        if inverse:
            if scale is not None:
                view = view / scale
            view = view.index_select(op.axis, torch.argsort(perm))
        else:
            view = view.index_select(op.axis, perm)
            if scale is not None:
                view = view * scale
        out[op.tensor] = view.reshape(shape).contiguous()
    return out


def _rng(key: MasterKey, nonce: str) -> Any:
    import numpy as np

    # numpy's generator is fine here: the plan is sealed and stored, never re-derived, so the
    # stream need not be stable across versions; its 256-bit seed comes from the master key.
    return np.random.default_rng(int.from_bytes(key.derive(f"obfuscate/{nonce}"), "big"))


def _scramble(name: str, key: MasterKey, nonce: str) -> str:
    import hashlib

    digest = hmac.new(key.derive(f"obfuscate/names/{nonce}"), name.encode(), hashlib.sha256).hexdigest()
    return f"t{digest[:16]}"


def _context(nonce: str) -> bytes:
    return f"torchshield/obfuscate/{nonce}".encode()


@dataclass(frozen=True)
class Obfuscation:
    """What one obfuscation did: the tensors to save, the sealed entry, and counts of the change.

    ``tensors_changed`` counts tensors whose bytes differ from the original, ``units_moved``
    the hidden units (channels, heads' dimensions, MLP units) that moved, ``names_scrambled`` the
    renamed tensors. A result always has ``tensors_changed > 0``: a no-op is refused."""

    tensors: dict[str, torch.Tensor]
    entry: dict[str, Any]
    tensors_changed: int
    units_moved: int
    names_scrambled: int
    units_by_kind: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def counts(self) -> dict[str, int]:
        return {"tensors_changed": self.tensors_changed, "units_moved": self.units_moved,
                "names_scrambled": self.names_scrambled}


def _changed(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> int:
    return sum(1 for k, v in after.items() if not torch_equal(before[k], v))


def _units_moved(plan: _Plan) -> int:
    return sum(_units_by_kind(plan).values())


def _units_by_kind(plan: _Plan) -> dict[str, int]:
    """Units that moved, per kind of permutation (a head permutation used twice counts twice)."""
    out: dict[str, int] = {}
    kinds = plan.kinds if len(plan.kinds) == len(plan.perms) else ["hidden units"] * len(plan.perms)
    for kind, perm in zip(kinds, plan.perms, strict=True):
        out[kind] = out.get(kind, 0) + sum(1 for i, u in enumerate(perm) if i != u)
    return out


def _ties(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Names that share storage with an earlier name (tied weights: GPT-2's lm_head and wte)."""
    seen: dict[tuple[int, tuple[int, ...], Any], str] = {}
    out: dict[str, str] = {}
    for name, t in state.items():
        if t.numel() == 0:
            continue
        ident = (t.data_ptr(), tuple(t.shape), t.dtype)
        if ident in seen:
            out[name] = seen[ident]
        else:
            seen[ident] = name
    return out


def _check_function(model: nn.Module, permuted: Mapping[str, torch.Tensor]) -> None:
    """Run a Hugging Face model with the original and the permuted weights on probe tokens; refuse
    a plan whose logits differ (a head or block we mapped wrongly must never be written)."""
    import torch
    from torch.func import functional_call

    config = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if not vocab or getattr(config, "model_type", None) not in ("bert", "gpt2"):
        return
    length = min(8, int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 8))
    ids = torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(0))
    device = next(model.parameters()).device
    ids = ids.to(device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            before = _logits(model(input_ids=ids))
            after = _logits(functional_call(model, {k: v.to(device) for k, v in permuted.items()},
                                            args=(), kwargs={"input_ids": ids}, strict=False))
    finally:
        model.train(training)
    scale = float(before.abs().max()) + 1e-6
    if before.shape != after.shape or float((before - after).abs().max()) > 1e-4 * max(1.0, scale):
        raise IntegrityError(f"the permutation planned for this {type(model).__name__} changes its outputs; "
                             "nothing was written", hint="report it with the model's config")


def _logits(out: Any) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out[0]


def _obfuscated_state(model: nn.Module, key: MasterKey, nonce: str,
                      ) -> tuple[_Plan, dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    plan = _plan_links(model, _rng(key, nonce))
    state = model.state_dict()
    ties = _ties(state)
    original = {k: v.detach().cpu().clone() for k, v in state.items()}
    permuted = _apply(original, plan, inverse=False)
    for alias, name in ties.items():  # tied weights stay tied: one tensor under both names
        if not torch_equal(permuted[alias], permuted[name]):
            raise IntegrityError(f"the plan moves tied tensors {name!r} and {alias!r} differently",
                                 hint="report it with the model's config")
        permuted[alias] = permuted[name]
    changed = _changed(original, permuted)
    if not changed:
        raise InputError(f"obfuscating this {type(model).__name__} would change no tensor",
                         hint="its permutable units are all equal; there is nothing to hide")
    if not all(torch_equal(original[k], v) for k, v in _apply(permuted, plan, inverse=True).items()):
        raise InputError("the model's weights are too small or large to rescale exactly",
                         hint="this model cannot be obfuscated reversibly; report it")
    _check_function(model, permuted)
    return plan, original, permuted, changed


def obfuscate_model(model: nn.Module, key: MasterKey, *, nonce: str | None = None,
                    scramble_names: bool = True) -> Obfuscation:
    """Permute (and where exact, rescale) ``model``'s hidden units and scramble tensor names.

    The model itself is not modified. With ``scramble_names=False`` the tensors keep their names
    (they load into the same module) and the entry has no sealed plan: only the function-level
    change is made and it cannot be reversed. Raises InputError, naming why, when nothing in the
    model can be permuted, and never returns a result that changed nothing."""
    from torchshield.crypto.envelope import seal

    nonce = nonce or secrets.token_hex(8)
    plan, _, permuted, changed = _obfuscated_state(model, key, nonce)
    if not scramble_names:
        return Obfuscation(permuted, {"version": _VERSION, "names_kept": True}, changed, _units_moved(plan), 0,
                           _units_by_kind(plan), plan.note)
    plan.names = {_scramble(name, key, nonce): name for name in permuted}
    renamed = {scrambled: permuted[name] for scrambled, name in plan.names.items()}
    entry = {"version": _VERSION, "nonce": nonce, "key_id": key.key_id,
             "sealed": base64.b64encode(seal(key, plan.to_json(), context=_context(nonce))).decode()}
    return Obfuscation(renamed, entry, changed, _units_moved(plan), len(renamed), _units_by_kind(plan), plan.note)


def obfuscate_module(model: nn.Module, key: MasterKey, *, nonce: str | None = None) -> str:
    """Permute and rescale ``model``'s hidden units in place (same function); returns the nonce.

    The module keeps its parameter names; ``obfuscate`` also scrambles them for a bundle.
    ``obfuscate_model(..., scramble_names=False)`` also returns the counts of what changed."""
    import torch

    nonce = nonce or secrets.token_hex(8)
    _, _, permuted, _ = _obfuscated_state(model, key, nonce)
    with torch.no_grad():
        model.load_state_dict(permuted)
    return nonce


def obfuscate(model: nn.Module, key: MasterKey, *, nonce: str | None = None,
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Obfuscated tensors (scrambled names) and the manifest entry that lets the key holder undo it.

    Raises InputError naming the layer if the model cannot be permuted without changing its
    outputs. The reversal is checked here, so a plan that would not restore bit-exactly (a
    scale that underflows) is never written. The entry's ``changed`` field holds the counts of
    :class:`Obfuscation` (not secret: how many tensors and units moved, how many names)."""
    result = obfuscate_model(model, key, nonce=nonce)
    return result.tensors, {**result.entry, "changed": result.counts()}


def torch_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (``torch.equal`` treats -0.0 == 0.0 and NaN != NaN)."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(a.view(_int_dtype(a.dtype)), b.view(_int_dtype(b.dtype))))
    return bool(torch.equal(a, b))


def _int_dtype(dtype: Any) -> Any:
    import torch

    return {2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]


def deobfuscate(tensors: Mapping[str, torch.Tensor], entry: Mapping[str, Any], key: MasterKey,
                ) -> dict[str, torch.Tensor]:
    """Restore the original names and weights, bit for bit. Needs only the tensors, not the module."""
    from torchshield.crypto.envelope import open_sealed

    try:
        if int(entry["version"]) != _VERSION:
            raise FormatError(f"obfuscation entry version {entry['version']} is not supported")
        nonce = str(entry["nonce"])
        blob = base64.b64decode(str(entry["sealed"]), validate=True)
    except (KeyError, TypeError, ValueError):
        raise FormatError("the bundle's obfuscation entry is malformed",
                          hint="it was not written by 'torchshield model obfuscate'") from None
    plan = _Plan.from_json(open_sealed(key, blob, context=_context(nonce)))
    if set(plan.names) != set(tensors):
        raise IntegrityError("the bundle's tensors do not match its obfuscation plan",
                             hint="tensors were added, removed or renamed after obfuscation")
    restored = {original: tensors[scrambled] for scrambled, original in plan.names.items()}
    return _apply(restored, plan, inverse=True)
