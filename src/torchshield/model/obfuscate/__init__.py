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
  permuted too. Which axis such a layer acts on is checked against the unit axis, from the
  shapes of a probe run: a BatchNorm normalises axis 1 (a Linear's units only in a rank-2
  tensor), a LayerNorm the last axis, a pool its last one or two axes (per unit only on a
  convolution's map of its own dimension, never on a Linear's features); after a Flatten the
  units are channel-major blocks, and a BatchNorm1d/LayerNorm there is permuted in those blocks. When every layer in between is positively homogeneous (ReLU, LeakyReLU, pooling,
  Dropout), unit ``i`` is also scaled by ``2^k_i`` on the way in and ``2^-k_i`` on the way out:
  powers of two make the scaling exact in floating point, so reversing it restores the original
  bits. Any other layer between two weight layers raises an error that names it.
* any other module, from its ``torch.fx`` graph (``graph.py``): groups of unit axes joined by
  residual additions, permutation only, with the same axis checks; a tensor read outside its
  module's call (``F.linear(x, self.fc.weight)``) pins its units.
* Hugging Face BERT/GPT-2-style transformers, from their module structure
  (``transformer_blocks.py``): attention heads, MLP intermediate units and, for the heads of a
  known class, the residual stream (embeddings, every LayerNorm, every projection that reads
  or writes it, the head; tied embeddings stay tied).

Whichever planner made it, every plan is then run against the original model on a seeded probe
input (``probe.py``: from the bundle's input spec, token ids for a text model, or read off the
first layer) in eval mode, and a plan whose outputs differ beyond float rounding is refused
(InputError, nothing written): the planners refuse what they cannot prove, and this check catches
what they missed. A model no probe input runs on is refused too, and so is one carrying unmerged
LoRA adapters (merge them first).

A plan that moves nothing, or whose result is byte-identical to the input, is refused
(InputError naming why): obfuscation never reports success for a no-op, and
``obfuscate_model`` returns counts of what changed.

The plan (permutations, scale exponents, name map) is sealed under the master key
(``crypto.envelope.seal``) and kept in the bundle manifest, with scrambled names or kept ones;
nothing about it is stored in clear. ``deobfuscate`` restores tied tensors as one tensor.
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
    from torchshield.model.obfuscate.probe import Probe

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
        "homogeneous": (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d),
        # per channel only over a convolution's spatial axes of their own dimension (and homogeneous)
        "pool": (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d),
        "elementwise": (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Mish, nn.Hardtanh,
                        nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SELU, nn.CELU, nn.Softsign),
        "norm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm),
        "flatten": (nn.Flatten,),
    }


def _units(layer: nn.Module) -> int:
    weight: Any = layer.weight
    return int(weight.shape[0])


def _plan_links(model: nn.Module, rng: Any, probe: Probe) -> _Plan:
    """Plan the permutations for ``model``: a chain of known layers (with power-of-two scaling),
    a Hugging Face transformer (heads, MLP units), or any other module through its fx graph."""
    from torch import nn

    from torchshield.model.obfuscate.transformer_blocks import residual_groups, transformer_groups

    if isinstance(model, nn.Sequential) and _is_known_chain(model):
        plan = _plan_chain(model, rng, probe)
        why = "it has fewer than two Linear/Conv layers in a row"
    elif hasattr(model, "config") and getattr(model.config, "model_type", None):
        plan = _plan_groups(transformer_groups(model), rng, kind="attention heads / MLP units")
        stream, note = residual_groups(model)
        plan = _plan_groups(stream, rng, kind="residual stream", into=plan)
        plan.note = note
        why = (f"no attention block or MLP of a known layout was found in this "
               f"{getattr(model.config, 'model_type', '?')} model (BERT- and GPT-2-style blocks are supported)")
    else:
        plan, why = _plan_graph(model, rng, probe)
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


def _plan_graph(model: nn.Module, rng: Any, probe: Probe) -> tuple[_Plan, str]:
    from torchshield.model.obfuscate import graph

    groups = graph.trace_groups(model, probe)
    free = [g for g in groups if not g.frozen_by and g.units >= 2]
    plan = _plan_groups([(g.rows, lambda r, n=g.units: r.permutation(n)) for g in free], rng)
    reasons = sorted({why for g in groups for why in g.frozen_by})
    why = ("its hidden units are pinned by " + "; ".join(reasons[:3])
           if reasons else "it has fewer than two Linear/Conv layers in a row")
    return plan, why


def _plan_chain(model: nn.Module, rng: Any, probe: Probe) -> _Plan:
    """Walk the chain and plan a permutation (and scales) for every producer -> consumer link; the
    probe's shapes say which axis each layer in between acts on."""
    from torchshield.model.obfuscate.probe import leaf_shapes

    shapes = leaf_shapes(model, probe)
    kinds = _kinds()
    plan = _Plan()
    producer: tuple[str, nn.Module] | None = None
    between: list[tuple[str, nn.Module]] = []
    for name, layer in _flatten_chain(model):
        if isinstance(layer, kinds["weight"]):
            if getattr(layer, "groups", 1) != 1:
                raise InputError(f"layer {name!r} is a grouped convolution; it cannot be safely permuted")
            if producer is not None:
                _link(plan, producer, between, (name, layer), rng, kinds, shapes)
            producer, between = (name, layer), []
        elif producer is not None:
            between.append((name, layer))  # checked in _link once a consumer follows
    return plan


def _link(plan: _Plan, producer: tuple[str, nn.Module], between: list[tuple[str, nn.Module]],
          consumer: tuple[str, nn.Module], rng: Any, kinds: dict[str, tuple[type, ...]],
          shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Plan one producer -> consumer link. Every layer in between must be shown to act per unit on
    the axis the units are on (read from the probe's shapes): a Linear's units are the last axis, a
    convolution's the channel axis (1) until a Flatten turns them into channel-major blocks."""
    from torch import nn

    from torchshield.model.obfuscate.probe import batchnorm_dims

    pname, player = producer
    cname, clayer = consumer
    units = _units(player)
    conv = _conv_dims(player)  # None for a Linear
    block, flat, scalable = 1, False, True
    norms: list[tuple[str, int]] = []  # (norm layer, block) whose per-unit tensors follow the permutation
    for name, layer in between:
        def refuse(why: str, name: str = name, layer: nn.Module = layer) -> InputError:
            return InputError(f"layer {name!r} ({type(layer).__name__}) between {pname!r} and {cname!r} {why}; "
                              "the model cannot be safely permuted")

        if name not in shapes:
            raise refuse("did not run on the probe input")
        rank = len(shapes[name])
        on_last = flat or conv is None  # the units are the last axis here
        if isinstance(layer, kinds["flatten"]):
            if flat or layer.start_dim != 1 or layer.end_dim != -1 or not isinstance(clayer, nn.Linear):
                raise refuse("must flatten from dim 1 to the end, once, into a Linear layer")
            if conv is None and rank != 2:
                raise refuse(f"flattens a Linear's units together with other axes (rank {rank})")
            width = int(shapes[name][1])
            if width % units:
                raise refuse(f"gives {width} features, not a multiple of the {units} channels of {pname!r}")
            block, flat = width // units, True
        elif isinstance(layer, nn.LayerNorm):
            scalable = False
            if not on_last or tuple(layer.normalized_shape) != (units * block,):
                raise refuse(f"does not normalise over the {units} units of {pname!r} alone")
            norms.append((name, block))
        elif isinstance(layer, kinds["norm"]):  # BatchNorm: normalises axis 1 of its input
            scalable = False
            dims = batchnorm_dims(layer)
            per_channel = not flat and conv == dims and rank == dims + 2
            per_feature = dims == 1 and on_last and rank == 2
            if not (per_channel or per_feature) or int(getattr(layer, "num_features", 0)) != units * block:
                raise refuse(f"does not normalise the {units} units of {pname!r} (it normalises axis 1 of a "
                             f"rank-{rank} tensor)")
            norms.append((name, block))
        elif isinstance(layer, kinds["pool"]):
            if flat or conv is None or conv != _pool_dims(layer) or rank != conv + 2:
                raise refuse("pools over the units' axis (a pool acts per unit only on a convolution's "
                             "spatial axes of its own dimension)")
        elif isinstance(layer, kinds["elementwise"]):
            scalable = False
        elif not isinstance(layer, kinds["homogeneous"]):
            raise refuse("is not known to act per unit")
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
    modules = dict(between)
    for name, nblock in norms:
        for tname, _ in (list(modules[name].named_parameters(recurse=False))
                         + list(modules[name].named_buffers(recurse=False))):
            if tname != "num_batches_tracked":
                plan.ops.append(_Op(f"{name}.{tname}", 0, pid, nblock))
    plan.ops.append(_Op(f"{cname}.weight", 1, pid, block, sid, -1))


def _conv_dims(layer: nn.Module) -> int | None:
    from torch import nn

    return next((d for d, cls in ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)) if isinstance(layer, cls)), None)


def _pool_dims(layer: nn.Module) -> int:
    """1 for the 1-D pools (they act on the last axis), 2 for the 2-D ones (the last two)."""
    return 1 if type(layer).__name__.endswith("1d") else 2


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


def _check_function(model: nn.Module, permuted: Mapping[str, torch.Tensor], probe: Probe) -> None:
    """Run ``model`` with its own and with the permuted tensors on ``probe`` (eval mode) and refuse
    a plan whose outputs differ beyond float rounding: whichever planner made it, a layer it mapped
    wrongly must never be written. The tolerance is relative to the outputs' scale (sums in matrix
    products and norm statistics run in another order after a permutation)."""
    from torchshield.model.obfuscate.probe import outputs

    before, after = outputs(model, probe), outputs(model, probe, permuted)
    worst = max((_difference(a, b) for a, b in zip(before, after, strict=False)), default=0.0)
    if len(before) != len(after) or worst > 1.0:
        raise InputError(f"obfuscation would change this {type(model).__name__}'s outputs (max difference "
                         f"{worst:.3g} x the float tolerance, on a probe input {probe.describe()}); nothing was "
                         "written", hint="a layer between two permuted layers does not act per unit in a way the "
                                         "planner could tell; report it with the model's architecture")


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in units of the tolerance (``max(1e-4, 16 eps) * max(1, max |a|)``); inf when the
    shapes, dtypes, integer values or non-finite entries differ."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return float("inf")
    if not a.is_floating_point():
        return 0.0 if torch.equal(a, b) else float("inf")
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    finite = torch.isfinite(a64)
    if not torch.equal(finite, torch.isfinite(b64)) or not torch.equal(a64[~finite], b64[~finite]):
        return float("inf")
    if not bool(finite.any()):
        return 0.0
    tol = max(1e-4, 16 * torch.finfo(a.dtype).eps) * max(1.0, float(a64[finite].abs().max()))
    return float((a64[finite] - b64[finite]).abs().max()) / tol


def _refuse_adapters(model: nn.Module) -> None:
    """Unmerged LoRA adapters (peft) sit beside the weights they modify: the planners do not map them."""
    if hasattr(model, "peft_config") or any(hasattr(m, "lora_A") for m in model.modules()):
        raise InputError(f"this {type(model).__name__} carries unmerged LoRA adapters (peft); obfuscation does "
                         "not map adapter weights", hint="merge the adapters first: model = model.merge_and_unload()")


def _obfuscated_state(model: nn.Module, key: MasterKey, nonce: str, input_spec: Mapping[str, Any] | None,
                      ) -> tuple[_Plan, dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    from torchshield.model.obfuscate.probe import build_probe

    _refuse_adapters(model)
    probe = build_probe(model, input_spec)
    plan = _plan_links(model, _rng(key, nonce), probe)
    state = model.state_dict()
    ties = _ties(state)
    original = {k: v.detach().cpu().clone() for k, v in state.items()}
    permuted = _apply(original, plan, inverse=False)
    for alias, name in ties.items():  # tied weights stay tied: one tensor under both names
        if not torch_equal(permuted[alias], permuted[name]):
            raise InputError(f"the plan moves tied tensors {name!r} and {alias!r} differently; nothing was written",
                             hint="the two names share one tensor but are used by layers the planner permutes "
                                  "differently; untie them or report it")
        permuted[alias] = permuted[name]
    changed = _changed(original, permuted)
    if not changed:
        raise InputError(f"obfuscating this {type(model).__name__} would change no tensor",
                         hint="its permutable units are all equal; there is nothing to hide")
    if not all(torch_equal(original[k], v) for k, v in _apply(permuted, plan, inverse=True).items()):
        raise InputError("the model's weights are too small or large to rescale exactly",
                         hint="this model cannot be obfuscated reversibly; report it")
    _check_function(model, permuted, probe)
    return plan, original, permuted, changed


def obfuscate_model(model: nn.Module, key: MasterKey, *, nonce: str | None = None,
                    scramble_names: bool = True, input_spec: Mapping[str, Any] | None = None) -> Obfuscation:
    """Permute (and where exact, rescale) ``model``'s hidden units and scramble tensor names.

    The model itself is not modified. With ``scramble_names=False`` the tensors keep their names
    (they load into the same module); the entry seals the plan either way, so ``deobfuscate``
    reverses both. ``input_spec`` (a bundle's ``preprocessing.input``: ``shape``, ``min``, ``max``,
    or token ids) shapes the probe input the result is checked on; without it the probe is read
    off the model (``probe.py``). Raises InputError, naming why, when nothing in the model can be
    permuted, when the permuted model's outputs would differ on the probe, or when no probe input
    runs; never returns a result that changed nothing."""
    from torchshield.crypto.envelope import seal

    nonce = nonce or secrets.token_hex(8)
    plan, _, permuted, changed = _obfuscated_state(model, key, nonce, input_spec)
    if scramble_names:
        plan.names = {_scramble(name, key, nonce): name for name in permuted}
    else:
        plan.names = {name: name for name in permuted}
    tensors = {stored: permuted[name] for stored, name in plan.names.items()}
    entry: dict[str, Any] = {"version": _VERSION, "nonce": nonce, "key_id": key.key_id,
                             "sealed": base64.b64encode(seal(key, plan.to_json(), context=_context(nonce))).decode()}
    if not scramble_names:
        entry["names_kept"] = True
    return Obfuscation(tensors, entry, changed, _units_moved(plan), len(tensors) if scramble_names else 0,
                       _units_by_kind(plan), plan.note)


def obfuscate_module(model: nn.Module, key: MasterKey, *, nonce: str | None = None,
                     input_spec: Mapping[str, Any] | None = None) -> str:
    """Permute and rescale ``model``'s hidden units in place (same function); returns the nonce.

    The module keeps its parameter names; ``obfuscate`` also scrambles them for a bundle.
    ``obfuscate_model(..., scramble_names=False)`` also returns the counts of what changed."""
    import torch

    nonce = nonce or secrets.token_hex(8)
    _, _, permuted, _ = _obfuscated_state(model, key, nonce, input_spec)
    with torch.no_grad():
        model.load_state_dict(permuted)
    return nonce


def obfuscate(model: nn.Module, key: MasterKey, *, nonce: str | None = None,
              input_spec: Mapping[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Obfuscated tensors (scrambled names) and the manifest entry that lets the key holder undo it.

    Raises InputError naming the layer if the model cannot be permuted without changing its
    outputs. The reversal is checked here, so a plan that would not restore bit-exactly (a
    scale that underflows) is never written. The entry's ``changed`` field holds the counts of
    :class:`Obfuscation` (not secret: how many tensors and units moved, how many names)."""
    result = obfuscate_model(model, key, nonce=nonce, input_spec=input_spec)
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
    """Restore the original names and weights, bit for bit. Needs only the tensors, not the module.

    Names that share one tensor in ``tensors`` (tied weights, re-tied by the bundle's ``aliases``)
    come back as one tensor too, so a bundle written from the result stores it once."""
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
    restored = _apply({original: tensors[stored] for stored, original in plan.names.items()}, plan, inverse=True)
    for alias, name in _ties(tensors).items():
        original, target = plan.names[alias], plan.names[name]
        if not torch_equal(restored[original], restored[target]):
            raise IntegrityError(f"tied tensors {target!r} and {original!r} do not restore to one tensor",
                                 hint="the bundle's tensors were changed after obfuscation")
        restored[original] = restored[target]
    return restored
