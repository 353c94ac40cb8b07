"""The recogniser registry: an explicit, ordered dict of named recognisers.

Order is priority: when two matches overlap with equal scores, the earlier recogniser wins.
Names are unique; adding a duplicate is an error unless ``replace=True``, so a plug-in cannot
silently shadow a built-in. ``default_registry()`` builds a fresh registry; ``get_registry()``
returns the process-wide one that ``find_pii`` uses when no registry is passed."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from torchshield.data.pii.recognizer import FunctionRecognizer, PatternRecognizer, Recognizer
from torchshield.errors import InputError

__all__ = ["RecognizerRegistry", "default_registry", "get_registry"]


class RecognizerRegistry:
    def __init__(self, recognizers: Iterable[Recognizer] = ()) -> None:
        self._by_name: dict[str, Recognizer] = {}
        self._selected: dict[tuple[frozenset[str], frozenset[str] | None], list[Recognizer]] = {}
        for r in recognizers:
            self.add(r)

    def add(self, recognizer: Recognizer, *, replace: bool = False) -> Recognizer:
        if not recognizer.name:
            raise InputError("a recognizer needs a non-empty name")
        if recognizer.name in self._by_name and not replace:
            raise InputError(f"a recognizer named {recognizer.name!r} is already registered",
                             hint="pick another name or pass replace=True")
        self._by_name[recognizer.name] = recognizer
        self._selected.clear()
        return recognizer

    def add_pattern(self, name: str, entity: str, pattern: str, *,
                    validator: Callable[[str], bool | float | None] | None = None,
                    context: Sequence[str] = (), score: float = 0.6, **options: object) -> Recognizer:
        """Register regex + validator + context words as a new recogniser (see PatternRecognizer)."""
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise InputError(f"recognizer {name!r}: invalid regular expression ({exc})") from None
        return self.add(PatternRecognizer(name, entity, compiled, validator=validator, context=context,
                                          score=score, **options))  # type: ignore[arg-type]

    def add_function(self, name: str, entity_types: Iterable[str],
                     fn: Callable[[str], Iterable[tuple[str, int, int, float]]], **options: object) -> Recognizer:
        return self.add(FunctionRecognizer(name, entity_types, fn, **options))  # type: ignore[arg-type]

    def remove(self, name: str) -> None:
        if name not in self._by_name:
            raise InputError(f"no recognizer named {name!r}", hint=f"known: {', '.join(self._by_name)}")
        del self._by_name[name]
        self._selected.clear()

    def __iter__(self) -> Iterator[Recognizer]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def entity_types(self) -> frozenset[str]:
        return frozenset(t for r in self._by_name.values() for t in r.entity_types)

    def select(self, languages: frozenset[str], types: frozenset[str] | None) -> list[Recognizer]:
        """Recognisers that serve any of ``languages`` and produce any of ``types`` (memoised)."""
        key = (languages, types)
        hit = self._selected.get(key)
        if hit is None:
            hit = [r for r in self._by_name.values()
                   if (r.languages is None or r.languages & languages)
                   and (types is None or r.entity_types & types)]
            if len(self._selected) < 256:
                self._selected[key] = hit
        return hit


def default_registry() -> RecognizerRegistry:
    """A new registry holding every built-in recogniser."""
    from torchshield.data.pii.recognizers_cn import cn_recognizers
    from torchshield.data.pii.recognizers_en import en_recognizers
    from torchshield.data.pii.recognizers_intl import intl_recognizers

    intl = intl_recognizers()
    # Email first (it contains things that look like URLs and names), then national numbers.
    return RecognizerRegistry([intl[0], *cn_recognizers(), *intl[1:], *en_recognizers()])


_SHARED: RecognizerRegistry | None = None


def get_registry() -> RecognizerRegistry:
    """The process-wide registry ``find_pii`` uses by default; add your recognisers here."""
    global _SHARED
    if _SHARED is None:
        _SHARED = default_registry()
    return _SHARED
