"""Plain JSON from the objects torchshield returns (dataclasses, paths, sets, bytes, NumPy and torch
scalars): one converter for the CLI's ``--json``, the JSON report and every other JSON writer."""

from __future__ import annotations

from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Make dataclasses, paths, sets and numpy/torch scalars printable as JSON."""
    import dataclasses
    from pathlib import Path

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return to_jsonable(obj.to_dict())
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    return obj
