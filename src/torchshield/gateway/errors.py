"""What the gateway refuses, each error with the HTTP status the serving layer should answer with.

The classes sit in the one ``torchshield.errors`` tree (so the CLI maps them to exit codes as
usual); ``http_status`` is a hint for ``serve``, which owns the mapping. Messages name entity
types and counts, never the values that triggered them::

    InputError (exit 2)
    ├── GatewayInputError   400  not text, or not valid UTF-8
    └── InputTooLarge       413  over the declared character limit
    PolicyError (exit 3)
    ├── InputRefused        422  the input holds an entity type the policy refuses
    └── OutputBlocked       451  the model's output held PII that was not in the request
"""

from __future__ import annotations

from collections.abc import Mapping

from torchshield.errors import InputError, PolicyError

__all__ = ["GatewayInputError", "InputRefused", "InputTooLarge", "OutputBlocked"]


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{t} x{n}" for t, n in sorted(counts.items()))


class GatewayInputError(InputError):
    """The request text is not a str, or its bytes are not valid UTF-8."""

    http_status = 400


class InputTooLarge(InputError):
    """The request text is longer than the gateway's declared limit."""

    http_status = 413


class InputRefused(PolicyError):
    """The privacy policy refuses requests holding these entity types; nothing reached the model."""

    http_status = 422

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        super().__init__(f"the request holds PII the privacy policy refuses to pass to the model "
                         f"({_counts_text(self.counts)})",
                         hint="remove these identifiers from the text and send it again")


class OutputBlocked(PolicyError):
    """The model's output held PII absent from the caller's input (a leak of training data)."""

    http_status = 451

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        super().__init__(f"the model's answer held personal data that was not in the request "
                         f"({_counts_text(self.counts)}); the privacy policy blocks it",
                         hint="the model may be repeating its training data; the refusal is counted in the audit record")
