"""One question pandas 2 and 3 answer differently: does this column hold text?"""

from __future__ import annotations

from typing import Any

__all__ = ["is_text"]


def is_text(series: Any) -> bool:
    """True for object columns and pandas' string dtypes (pandas 3 reads CSV text as ``str``)."""
    import pandas as pd

    return series.dtype == object or pd.api.types.is_string_dtype(series.dtype)
