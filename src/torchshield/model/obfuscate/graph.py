"""Plan permutations for any traceable module from its ``torch.fx`` graph.

Each tensor that flows through the graph has a *unit axis* (features of a Linear output, channels
of a Conv output). Every unit axis belongs to a group; a group is a set of unit axes that must be
permuted together. A Linear/Conv starts a new group at its output; elementwise activations,
pooling, dropout and per-channel norms pass their input's group through; ``a + b`` (a residual
connection, ``out += identity``) merges the groups of both sides, which is how the residual stream
of a ResNet gets one permutation shared by every block that writes to it; ``flatten(x, 1)`` into a
Linear ties the Linear's inputs to the channels in channel-major blocks.

A group is *frozen* (left alone) when any of its values reaches the model's output or input, is
used by an operation we do not know to act per unit, belongs to a layer called more than once, or
when one of its tensors is read outside its module's call (a ``get_attr`` node: ``F.linear(x,
self.fc.weight)``, ``x @ self.fc.weight.T``): the planner never guesses. Layers that act on some
axes only are checked against the axis the units are on, from the shapes of a probe run
(``torch.fx`` ``ShapeProp``): a BatchNorm normalises axis 1 (a Linear's units only in a rank-2
tensor), a LayerNorm the last axis, a 1-D pool the last axis and a 2-D pool the last two (per
unit only on a convolution's map of the same dimension). Every free group gets a random
permutation applied to its producers' rows (weight and bias), its consumers' columns and its
norms' per-channel parameters and buffers; no rescaling here (a norm between layers makes scaling inexact). Which nodes froze a
group is kept so that a refusal can name them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchshield.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from torchshield.model.obfuscate.probe import Probe

__all__ = ["GraphGroup", "trace_groups"]


@dataclass
class GraphGroup:
    """One set of unit axes permuted together: (tensor name, axis, block) per member."""

    units: int
    rows: list[tuple[str, int, int]] = field(default_factory=list)
    frozen_by: list[str] = field(default_factory=list)


@dataclass
class _Value:
    group: int
    axis: str  # "last" (Linear features) or "channel" (axis 1 of a conv map)
    flat_block: int | None = None  # set after flatten(x, 1) of a channel map


class _Groups:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.info: list[GraphGroup] = []

    def new(self, units: int) -> int:
        self.parent.append(len(self.parent))
        self.info.append(GraphGroup(units))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int, where: str) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        ia, ib = self.info[ra], self.info[rb]
        self.parent[rb] = ra
        ia.rows += ib.rows
        ia.frozen_by += ib.frozen_by
        if ia.units != ib.units:
            ia.frozen_by.append(f"{where} (adds {ia.units} and {ib.units} units)")
        return ra

    def freeze(self, g: int, why: str) -> None:
        self.info[self.find(g)].frozen_by.append(why)

    def add(self, g: int, tensor: str, axis: int, block: int = 1) -> None:
        self.info[self.find(g)].rows.append((tensor, axis, block))

    def roots(self) -> list[GraphGroup]:
        return [self.info[g] for g in range(len(self.parent)) if self.find(g) == g]


def _kinds() -> dict[str, tuple[Any, ...]]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    return {
        "passthrough": (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Tanh,
                        nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Mish, nn.Hardtanh, nn.ReLU6,
                        nn.Hardswish, nn.Hardsigmoid, nn.SELU, nn.CELU, nn.Softsign),
        # pools act on the last one or two axes: checked against the units' axis (``_pool``)
        "pool1d": (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d),
        "pool2d": (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
        "pool1d_functions": (F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d),
        "pool2d_functions": (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d),
        "functions": (torch.relu, F.relu, torch.tanh, torch.sigmoid, F.gelu, F.silu, F.leaky_relu,
                      F.dropout, torch.nn.functional.relu6, F.elu),
        "methods": ("relu", "tanh", "sigmoid", "contiguous", "clone", "detach"),
        "add": (operator.add, operator.iadd, torch.add),
        "flatten": (torch.flatten,),
        "weight": (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d),
        "batchnorm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
    }


def trace(model: nn.Module) -> Any:
    import torch.fx

    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types for untraceable code
        raise InputError(f"cannot trace a {type(model).__name__} with torch.fx ({type(exc).__name__})",
                         hint="obfuscation needs a model whose forward has no data-dependent control flow") from None


def trace_groups(model: nn.Module, probe: Probe | None = None) -> list[GraphGroup]:
    """The permutation groups of ``model`` (frozen ones included, with the reason). ``probe`` gives
    the tensor shapes that axis-specific layers are checked against; without it they freeze."""
    gm = trace(model)
    _propagate_shapes(gm, probe)
    modules = dict(gm.named_modules())
    kinds = _kinds()
    groups = _Groups()
    values: dict[Any, _Value] = {}
    calls: dict[str, int] = {}
    direct: list[tuple[Any, str]] = []  # tensors read outside their module's call, and where
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
        elif node.op == "get_attr":
            direct.append((_attr(gm, str(node.target)), f"'{node.target}' read directly in forward"))
    for node in gm.graph.nodes:
        where = _where(node, modules)
        args = [a for a in node.all_input_nodes]
        grouped = [a for a in args if a in values]
        if node.op in ("placeholder", "get_attr"):
            continue  # inputs and attributes have no group: a layer reading them is not permuted on that side
        if node.op == "output":
            for a in grouped:
                groups.freeze(values[a].group, "the model's output")
            continue
        out = _step(node, where, modules, kinds, groups, values, grouped, calls)
        if out is not None:
            values[node] = out
        else:
            for a in grouped:
                groups.freeze(values[a].group, where)
    roots = groups.roots()
    _freeze_direct_reads(model, roots, direct)
    return roots


def _propagate_shapes(gm: Any, probe: Probe | None) -> None:
    """Record each node's output shape (``node.meta['tensor_meta']``) from a run on ``probe``."""
    if probe is None or probe.kwargs or not probe.args:
        return
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from torchshield.model.obfuscate.probe import eval_mode

    try:
        with eval_mode(gm), torch.no_grad():
            ShapeProp(gm).propagate(*probe.args)
    except Exception:  # noqa: BLE001 - no shapes: every axis-specific layer then freezes its group
        for node in gm.graph.nodes:
            node.meta.pop("tensor_meta", None)


def _rank(node: Any) -> int | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return len(shape) if shape is not None else None


def _attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def _freeze_direct_reads(model: nn.Module, roots: list[GraphGroup], direct: list[tuple[Any, str]]) -> None:
    """Freeze every group holding a tensor that forward also reads directly (or a tensor tied to one):
    that use does not follow the permutation of the module's units."""
    import torch

    if not direct:
        return
    state = model.state_dict(keep_vars=True)
    read: dict[str, str] = {}
    for tensor, why in direct:
        if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0:
            continue
        for name, t in state.items():
            if t is tensor or (t.numel() and t.data_ptr() == tensor.data_ptr() and t.shape == tensor.shape):
                read.setdefault(name, why)
    for group in roots:
        whys = sorted({read[tensor] for tensor, _, _ in group.rows if tensor in read})
        group.frozen_by += whys


def _step(node: Any, where: str, modules: dict[str, Any], kinds: dict[str, tuple[Any, ...]], groups: _Groups,
          values: dict[Any, _Value], grouped: list[Any], calls: dict[str, int]) -> _Value | None:
    """The value ``node`` produces, or None when its inputs' groups must freeze."""
    from torch import nn

    if node.op == "call_module":
        mod = modules[node.target]
        if isinstance(mod, kinds["weight"]):
            return _weight(node, mod, where, groups, values, grouped, calls[node.target] > 1)
        if isinstance(mod, kinds["passthrough"]) and len(grouped) == 1:
            return values[grouped[0]]
        if isinstance(mod, kinds["pool1d"] + kinds["pool2d"]) and len(grouped) == 1:
            return _pool(values[grouped[0]], grouped[0], 1 if isinstance(mod, kinds["pool1d"]) else 2)
        if isinstance(mod, kinds["batchnorm"]) and len(grouped) == 1:
            v = values[grouped[0]]
            block = _norm_block(v, grouped[0], mod, groups, int(mod.num_features))
            if block is None:
                return None
            for t in ("weight", "bias", "running_mean", "running_var"):
                if getattr(mod, t, None) is not None:
                    groups.add(v.group, f"{node.target}.{t}", 0, block)
            return v
        if isinstance(mod, nn.LayerNorm) and len(grouped) == 1:
            v = values[grouped[0]]
            if v.axis == "last" and len(mod.normalized_shape) == 1:
                block = _flat_block(v, groups, int(mod.normalized_shape[0]))
                if block is None:
                    return None
                for t in ("weight", "bias"):
                    if getattr(mod, t, None) is not None:
                        groups.add(v.group, f"{node.target}.{t}", 0, block)
                return v
            return None
        if isinstance(mod, nn.GroupNorm) and len(grouped) == 1:
            v = values[grouped[0]]
            if v.axis == "channel" and mod.num_groups in (1, mod.num_channels):
                for t in ("weight", "bias"):
                    if getattr(mod, t, None) is not None:
                        groups.add(v.group, f"{node.target}.{t}", 0)
                return v
            return None
        if isinstance(mod, nn.Flatten) and len(grouped) == 1:
            return _flatten(values[grouped[0]], mod.start_dim, mod.end_dim)
        return None
    if node.op == "call_function" and node.target in kinds["add"] and len(node.args) == 2:
        if len(grouped) == 2:
            a, b = values[grouped[0]], values[grouped[1]]
            if a.axis != b.axis or a.flat_block or b.flat_block:
                return None
            return _Value(groups.union(a.group, b.group, where), a.axis)
        if len(grouped) == 1 and len(node.all_input_nodes) == 1:
            return values[grouped[0]]  # x + constant
        return None
    if len(grouped) == 1 and len(node.all_input_nodes) == 1:
        if node.op == "call_function" and node.target in kinds["functions"]:
            return values[grouped[0]]
        if node.op == "call_function" and node.target in kinds["pool1d_functions"] + kinds["pool2d_functions"]:
            return _pool(values[grouped[0]], grouped[0], 1 if node.target in kinds["pool1d_functions"] else 2)
        if node.op == "call_method" and node.target in kinds["methods"]:
            return values[grouped[0]]
        if (node.op == "call_function" and node.target in kinds["flatten"]) or (
                node.op == "call_method" and node.target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return _flatten(values[grouped[0]], start, end)
    return None


def _pool(v: _Value, source: Any, dims: int) -> _Value | None:
    """A ``dims``-D pool acts on the last ``dims`` axes: per unit only on a convolution's map of
    rank ``dims + 2`` (never on a Linear's features, which are the last axis)."""
    if v.axis == "channel" and v.flat_block is None and _rank(source) == dims + 2:
        return v
    return None


def _flat_block(v: _Value, groups: _Groups, width: int) -> int | None:
    """The block of a per-feature layer of ``width`` on the units of ``v`` (1, or the channel-major
    block after a flatten); None when the width does not match the units."""
    units = groups.info[groups.find(v.group)].units
    if v.flat_block is None:
        return 1 if width == units else None
    return width // units if units and width % units == 0 else None


def _norm_block(v: _Value, source: Any, mod: Any, groups: _Groups, width: int) -> int | None:
    """The block of a BatchNorm over ``v`` (it normalises axis 1 of its input), or None when axis 1
    is not the units' axis: a Linear's units are axis 1 only in a rank-2 tensor."""

    from torchshield.model.obfuscate.probe import batchnorm_dims

    dims = batchnorm_dims(mod)
    rank = _rank(source)
    if v.axis == "channel" and v.flat_block is None and rank == dims + 2:
        return _flat_block(v, groups, width)
    if v.axis == "last" and dims == 1 and rank == 2:
        return _flat_block(v, groups, width)
    return None


def _flatten(v: _Value, start: int, end: int) -> _Value | None:
    if v.axis == "channel" and start == 1 and end == -1 and v.flat_block is None:
        return _Value(v.group, "last", flat_block=-1)  # block fixed by the consumer's width
    return None


def _weight(node: Any, mod: Any, where: str, groups: _Groups, values: dict[Any, _Value], grouped: list[Any],
            shared: bool) -> _Value:
    from torch import nn

    linear = isinstance(mod, nn.Linear)
    if grouped:
        v = values[grouped[0]]
        if shared or getattr(mod, "groups", 1) != 1 or len(node.all_input_nodes) != 1:
            groups.freeze(v.group, where)
        else:
            units = groups.info[groups.find(v.group)].units
            width = mod.in_features if linear else mod.in_channels
            block = 1
            if v.flat_block is not None:
                block = width // units if units and width % units == 0 else 0
            wrong_axis = (v.axis != "last") if linear else (v.axis != "channel" or v.flat_block is not None)
            if wrong_axis or block == 0 or units * block != width:
                groups.freeze(v.group, f"{where} (reads {width} inputs from {units} units)")
            else:
                groups.add(v.group, f"{node.target}.weight", 1, block)
    out_units = mod.out_features if linear else mod.out_channels
    g = groups.new(out_units)
    if shared or getattr(mod, "groups", 1) != 1:
        groups.freeze(g, f"{where} ({'called more than once' if shared else 'grouped convolution'})")
    groups.add(g, f"{node.target}.weight", 0)
    if mod.bias is not None:
        groups.add(g, f"{node.target}.bias", 0)
    return _Value(g, "last" if linear else "channel")


def _where(node: Any, modules: dict[str, Any]) -> str:
    if node.op == "call_module":
        return f"layer '{node.target}' ({type(modules[node.target]).__name__})"
    what = f"{node.op} {getattr(node.target, '__name__', node.target)}"
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        return f"layer '{path}' ({getattr(cls, '__name__', cls)}: {what})"
    return what
