"""Reverse ``encrypt`` tokens: the only operator whose output the key holder can undo."""

from __future__ import annotations

from typing import Any

from torchshield.data.anonymize.operators import TOKEN_PATTERN, KeyedContext, decrypt_token

__all__ = ["unmask_text"]


def unmask_text(text: str, key: Any, *, keys: KeyedContext | None = None) -> str:
    """``text`` with every ``tsenc1.`` token replaced by its plaintext (WrongKeyError on a foreign key)."""
    ctx = keys if keys is not None else KeyedContext(key)
    if "tsenc1." not in text:
        return text
    return TOKEN_PATTERN.sub(lambda m: decrypt_token(m.group(0), ctx), text)
