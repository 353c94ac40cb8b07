"""Optional per-client de-identification of a shard before local training, from the data policy.

Each hospital applies its own ``torchshield.data`` policy to its rows before the first local
step, so what training (and a memorising model) sees is already generalised or suppressed.
The hook works on the shard's feature table in *original units* (it undoes and redoes the
dataset's normalisation), because policies are written for real values (``age: generalize
width 10``). The model's input shape never changes: a suppressed or dropped column becomes
0 (the training mean after standardisation), a generalised range becomes its midpoint.
Columns that a policy turns into text the model cannot read are refused with the column name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from torchshield.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from torchshield.federated.task import FederatedTask
    from torchshield.nn.datasets import Split

__all__ = ["deidentify_split"]

_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)\s*$")


def deidentify_split(split: Split, task: FederatedTask, *, policy: str) -> Split:
    """``split`` with ``policy`` applied to its features (see the module docstring)."""
    import pandas as pd
    import torch

    from torchshield.data import load_policy
    from torchshield.data.anonymize import Anonymizer
    from torchshield.nn.datasets import Split

    names = list(task.data.feature_names)
    if not names:
        raise InputError(f"dataset {task.data.name} has no named columns for a de-identification policy",
                         hint="use a tabular data set, or remove deid.policy")
    norm = task.data.normalization
    shift = np.asarray(norm.get("shift", np.zeros(len(names))), dtype=np.float64)
    scale = np.asarray(norm.get("scale", np.ones(len(names))), dtype=np.float64)
    raw = split.x.numpy().reshape(len(split), -1).astype(np.float64) * scale + shift
    df = pd.DataFrame(raw, columns=names)
    pol = load_policy(policy)
    pol.check_columns(names, source=f"deid policy {policy}")  # a rule for a column we lack is a typo
    out = Anonymizer(pol).dataframe(df)
    cols = []
    for i, name in enumerate(names):
        if name not in out.columns:  # dropped: the normalised training mean
            cols.append(np.full(len(df), shift[i]))
            continue
        cols.append(np.array([_number(v, name) if v is not None else shift[i] for v in out[name].tolist()]))
    z = ((np.stack(cols, axis=1) - shift) / scale).astype(np.float32)
    return Split(torch.from_numpy(z).reshape(split.x.shape), split.y.clone())


def _number(value: Any, column: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    m = _RANGE.match(text)
    if m:
        return (float(m.group(1)) + float(m.group(2))) / 2
    try:
        return float(text)
    except ValueError:
        raise InputError(f"deid policy turns column {column!r} into text the model cannot train on",
                         hint="generalise it with 'width', suppress it with drop: true, or keep it") from None
