"""Reading the checkpoints users bring: ``.tsb``, ``.safetensors``, and torch files.

Torch files are read only with ``torch.load(weights_only=True)``, torch's restricted
unpickler, and only after the static scanner found nothing that could run code: belt and
braces, because ``weights_only`` has had bypasses before."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchshield.errors import FormatError, InputError, UnsafeFileError

__all__ = ["read_checkpoint"]

_STATE_KEYS = ("state_dict", "model_state_dict", "model", "weights")


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for k in _STATE_KEYS:
            inner = obj.get(k)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return {str(n): v for n, v in inner.items()}
    raise InputError(f"{path} holds no state dict of tensors",
                     hint="save model.state_dict() (or a dict with a 'state_dict' entry) and try again")


def read_checkpoint(path: str | os.PathLike[str], *, key: Any = None,
                    scan_first: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a ``.tsb``, ``.safetensors`` or ``.pt/.pth/.bin`` file."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a directory", hint="pass a model file")
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if p.stat().st_size == 0:
        raise FormatError(f"{p} is empty")
    from torchshield.model.bundle import is_bundle, load

    if is_bundle(p):
        return dict(load(p, key=key))
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, ValueError, OSError) as exc:
            raise FormatError(f"{p} is not a valid safetensors file ({exc})") from None
    if scan_first:
        _refuse_unsafe(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        raise FormatError(f"{p} cannot be read as a PyTorch checkpoint with weights_only=True "
                          f"({type(exc).__name__})",
                          hint="it may need code to load; scan it with: torchshield model scan") from None
    return _as_state_dict(obj, p)


def _refuse_unsafe(p: Path) -> None:
    try:
        from torchshield.model.scan import scan
    except ImportError:  # scanner not part of this build: weights_only still protects
        return
    report = scan(p)
    if not report.safe:
        raise UnsafeFileError(f"{p} can run code when loaded; refusing to read it",
                              hint=f"see: torchshield model scan {p}")
