"""Training state beside the weights (optimizer moments, epoch, scheduler), flattened into
tensors plus one JSON document so a bundle can carry it, and rebuilt exactly on load.

A training checkpoint is a nested structure of dicts, lists, tensors and plain values.
Tensors become data-section entries named by their path (``optimizer/state/0/exp_avg``); the
JSON keeps the structure with ``{"__tensor__": path}`` at each tensor leaf. Dicts with
non-string keys (an optimizer's ``state`` is keyed by parameter index) are stored as
``{"__items__": [[key, value], ...]}`` so the keys come back as ints. NumPy scalars become
Python numbers and NumPy arrays tensors (``{"__ndarray__": path}``), so nothing here needs
pickle."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from torchshield.errors import InputError
from torchshield.model.bundle import TrainingState

__all__ = ["describe_dropped", "flatten_state", "unflatten_state"]

_SCALARS = (bool, int, float, str, type(None))


def flatten_state(rest: Mapping[str, Any]) -> TrainingState:
    """``rest`` (everything a checkpoint holds beside its state dict) as a TrainingState."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                raise InputError(f"training state {path!r} is an object array", hint="store numbers only")
            tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
            return {"__ndarray__": path}
        if isinstance(obj, np.generic):
            return walk(obj.item(), path)
        if isinstance(obj, float) and not math.isfinite(obj):
            return {"__float__": repr(obj)}
        if isinstance(obj, _SCALARS):
            return obj
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: walk(v, f"{path}/{k}" if path else k) for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise InputError(f"training state {path!r} has a key of type {type(k).__name__}")
                items.append([k, walk(v, f"{path}/{k}" if path else str(k))])
            return {"__items__": items}
        if isinstance(obj, (list, tuple)):
            out = [walk(v, f"{path}/{i}") for i, v in enumerate(obj)]
            return out if isinstance(obj, list) else {"__tuple__": out}
        raise InputError(f"training state {path!r} is a {type(obj).__name__}, which a bundle cannot hold",
                         hint="keep tensors, numbers, strings, lists and dicts in the checkpoint")

    values = {k: walk(v, k) for k, v in rest.items()}
    return TrainingState(tensors, values)


def unflatten_state(state: TrainingState) -> dict[str, Any]:
    """The nested structure :func:`flatten_state` flattened, with its tensors."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if set(obj) == {"__tensor__"}:
            return state.tensors[obj["__tensor__"]].clone()
        if set(obj) == {"__ndarray__"}:
            return state.tensors[obj["__ndarray__"]].numpy().copy()
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        if set(obj) == {"__tuple__"}:
            return tuple(walk(v) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {k: walk(v) for k, v in obj["__items__"]}
        return {k: walk(v) for k, v in obj.items()}

    return {k: walk(v) for k, v in state.values.items()}


def describe_dropped(rest: Mapping[str, Any]) -> dict[str, str]:
    """What leaving ``rest`` out drops, entry by entry (``{"optimizer": "12 tensors", "epoch": "7"}``)."""

    def count(obj: Any) -> int:
        if isinstance(obj, (torch.Tensor, np.ndarray)):
            return 1
        if isinstance(obj, Mapping):
            return sum(count(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(count(v) for v in obj)
        return 0

    out = {}
    for k, v in rest.items():
        n = count(v)
        out[str(k)] = f"{n} tensors" if n else repr(v.item() if isinstance(v, np.generic) else v)[:40]
    return out
