"""Reading the checkpoints users bring: ``.tsb``, ``.safetensors``, and torch files.

Torch files are read only with ``torch.load(weights_only=True)``, torch's restricted
unpickler, and only after the static scanner found nothing that could run code: belt and
braces, because ``weights_only`` has had bypasses before.

The two agree on what is harmless: NumPy scalars and arrays (``best_acc = np.float64(...)`` in a
training checkpoint) are accepted by the scanner, so they are admitted to torch's restricted
unpickler for that one load, by exactly the names the scanner judged safe. A file the scanner
calls safe is therefore never refused with "scan it" (that advice would loop)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchshield.errors import FormatError, InputError, UnsafeFileError

__all__ = ["read_checkpoint", "read_training_checkpoint"]

_STATE_KEYS = ("state_dict", "model_state_dict", "model", "weights")


def _is_tensor_map(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _split(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict inside ``obj`` and everything else beside it (optimizer, epoch, ...)."""
    if _is_tensor_map(obj):
        return {str(k): v for k, v in obj.items()}, {}
    if isinstance(obj, Mapping):
        for k in _STATE_KEYS:
            if _is_tensor_map(obj.get(k)):
                return {str(n): v for n, v in obj[k].items()}, {str(o): v for o, v in obj.items() if o != k}
    raise InputError(f"{path} holds no state dict of tensors",
                     hint="save model.state_dict() (or a dict with a 'state_dict' entry) and try again")


def read_checkpoint(path: str | os.PathLike[str], *, key: Any = None,
                    scan_first: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a ``.tsb``, ``.safetensors`` or ``.pt/.pth/.bin`` file."""
    return read_training_checkpoint(path, key=key, scan_first=scan_first)[0]


def read_training_checkpoint(path: str | os.PathLike[str], *, key: Any = None,
                             scan_first: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, rest)``: the weights, and what a training checkpoint holds beside them
    (``optimizer``, ``epoch``, ... as loaded; empty for weight files)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a directory", hint="pass a model file")
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if p.stat().st_size == 0:
        raise FormatError(f"{p} is empty")
    from torchshield.model.bundle import is_bundle, load

    if is_bundle(p):
        return dict(load(p, key=key)), {}
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p)), {}
        except (SafetensorError, ValueError, OSError) as exc:
            raise FormatError(f"{p} is not a valid safetensors file ({exc})") from None
    if scan_first:
        _refuse_unsafe(p)
    return _split(_weights_only_load(p), p)


def _scanner_safe_globals(p: Path) -> list[Any]:
    """NumPy names in ``p`` that torch's restricted unpickler refuses but our scanner accepts."""
    try:
        from torchshield.model.scan.allowlist import Allowlist
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(p))
    except Exception:  # noqa: BLE001 - not a zip checkpoint (legacy format): nothing to admit
        return []
    allow = Allowlist(())
    out = []
    for full in names:
        module, _, name = full.rpartition(".")
        if not module.split(".")[0] == "numpy" or allow.judge(module, name).severity is not None:
            continue
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        out.append(obj)
        if full == "numpy.dtype":  # an unpickled dtype is an instance of its DType class (numpy >= 1.25)
            import numpy as np

            out.extend(type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG")
    return out


def _weights_only_load(p: Path) -> Any:
    extra = _scanner_safe_globals(p)
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        refused = [g for g in _unsafe_names(p) if not g.startswith("numpy.")]
        if refused:
            raise FormatError(f"{p} holds Python objects torchshield does not load ({', '.join(refused[:3])})",
                              hint="save tensors and plain values only, e.g. "
                                   "torch.save({'state_dict': model.state_dict(), 'epoch': 3}, path)") from None
        raise FormatError(f"{p} cannot be read as a PyTorch checkpoint with weights_only=True "
                          f"({type(exc).__name__})",
                          hint="it is not a PyTorch checkpoint torchshield can read; re-save it with torch.save "
                               "of a state dict") from None


def _unsafe_names(p: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
    except Exception:  # noqa: BLE001
        return []


def _refuse_unsafe(p: Path) -> None:
    try:
        from torchshield.model.scan import scan
    except ImportError:  # scanner not part of this build: weights_only still protects
        return
    report = scan(p)
    if not report.safe:
        raise UnsafeFileError(f"{p} can run code when loaded; refusing to read it",
                              hint=f"see: torchshield model scan {p}")
