"""Word lists shipped with torchshield (no download at run time); see each file's header."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["load_words"]


@cache
def load_words(name: str) -> frozenset[str]:
    """The non-comment lines of ``lexicon/<name>.txt``."""
    raw = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in raw.splitlines() if line.strip() and not line.startswith("#"))
