"""Tensor dtype names as safetensors spells them, and the torch dtype for each."""

from __future__ import annotations

import torch

from torchshield.errors import FormatError, InputError

__all__ = ["DTYPE_BY_NAME", "dtype_from_name", "dtype_name"]

DTYPE_BY_NAME: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64, "C128": torch.complex128,
}
_NAME_BY_DTYPE = {v: k for k, v in DTYPE_BY_NAME.items()}


def dtype_name(dtype: torch.dtype, *, tensor: str = "") -> str:
    try:
        return _NAME_BY_DTYPE[dtype]
    except KeyError:
        raise InputError(f"tensor {tensor!r} has dtype {dtype}, which bundles cannot store",
                         hint="convert it to a standard dtype first") from None


def dtype_from_name(name: str, *, tensor: str = "") -> torch.dtype:
    try:
        return DTYPE_BY_NAME[name]
    except KeyError:
        raise FormatError(f"tensor {tensor!r} has unknown dtype {name!r}",
                          hint="the file is damaged or from a newer torchshield") from None
