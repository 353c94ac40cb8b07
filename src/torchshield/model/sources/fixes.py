"""Layer replacements recorded in a bundle, re-applied when the module is rebuilt.

DP-SGD cannot train BatchNorm (it mixes the examples of a batch, so no per-example gradient
exists), so ``torchshield train`` replaces it with GroupNorm before training (Opacus'
``ModuleValidator.fix``) and records each change in the manifest's ``privacy.model_fixes`` as
``"layer1.0.bn1: BatchNorm2d -> GroupNorm"``. The weights in the bundle belong to the fixed
module; rebuilding the original architecture without the fix gives "weights do not fit".

This module re-applies such a record without Opacus: GroupNorm with ``gcd(32, C)`` groups and
the BatchNorm's ``affine`` flag, which is Opacus' rule (``opacus/validators/batch_norm.py``),
checked against Opacus in the tests."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from torch import nn

from torchshield.errors import FormatError

__all__ = ["apply_fixes", "batchnorm_to_groupnorm"]

_RECORD = re.compile(r"^(?P<name>[\w.]*): (?P<before>\w+) -> (?P<after>\w+)$")
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batchnorm_to_groupnorm(module: nn.Module) -> nn.GroupNorm:
    """The GroupNorm that replaces ``module`` (a BatchNorm) for DP training."""
    if not isinstance(module, _BATCHNORMS):
        raise TypeError(f"not a BatchNorm: {type(module).__name__}")
    c = int(module.num_features)
    return nn.GroupNorm(math.gcd(32, c), c, affine=module.affine)


_FIXERS = {("BatchNorm1d", "GroupNorm"): batchnorm_to_groupnorm, ("BatchNorm2d", "GroupNorm"): batchnorm_to_groupnorm,
           ("BatchNorm3d", "GroupNorm"): batchnorm_to_groupnorm, ("SyncBatchNorm", "GroupNorm"): batchnorm_to_groupnorm}


def apply_fixes(model: nn.Module, records: Iterable[str]) -> list[str]:
    """Replace the layers ``records`` name in ``model`` (in place); return the records applied.

    A record naming a layer the model does not have, or a change not known here, is a
    FormatError: the rebuilt module would not be the one the weights were trained in."""
    applied = []
    for record in records:
        m = _RECORD.match(str(record))
        if m is None:
            raise FormatError(f"recorded model fix {record!r} is not 'layer: Before -> After'")
        name, before, after = m["name"], m["before"], m["after"]
        fixer = _FIXERS.get((before, after))
        if fixer is None:
            raise FormatError(f"recorded model fix {record!r} is not one torchshield can re-apply",
                              hint="rebuild the model as it was trained and load the weights with load_state_dict")
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise FormatError(f"recorded model fix {record!r} names a layer the model does not have") from None
        if type(current).__name__ == after:
            continue  # already fixed (the architecture was saved after the fix)
        if type(current).__name__ != before:
            raise FormatError(f"recorded model fix {record!r}: layer {name!r} is a {type(current).__name__}")
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, fixer(current))
        applied.append(str(record))
    return applied
