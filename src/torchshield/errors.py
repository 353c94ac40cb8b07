"""One exception tree for all of torchshield.

Every error carries the process exit code the CLI uses for it and a message that says what
was wrong and what to do. Messages never contain secrets (keys, tokens, raw PII)::

    ShieldError                       exit 2 unless a subclass says otherwise
    ├── InputError                    2  bad input or usage: a file, field or value is wrong
    │   ├── FormatError               2  not the expected file format / unsupported version
    │   ├── KeyMaterialError          2  key file missing, malformed or unsafe
    │   └── MissingDependencyError    2  an optional extra is not installed
    ├── WrongKeyError                 2  the key given is not the key the object was sealed with
    ├── CheckFailed                   1  a check ran and found a problem
    │   ├── IntegrityError            1  bytes changed, truncated, extended or reordered
    │   ├── SignatureError            1  signature missing, invalid, or by another signer
    │   └── UnsafeFileError           1  a model file can run code when loaded
    └── PolicyError                   3  refused by policy
        ├── AccessDenied              3  the caller's role does not allow it
        └── PrivacyBudgetExceeded     3  the privacy budget would be overspent

The CLI maps ``exit_code`` to the process status; the HTTP layer maps the same classes to
status codes. Catch ``ShieldError`` to catch everything torchshield raises on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "AccessDenied",
    "CheckFailed",
    "FormatError",
    "InputError",
    "IntegrityError",
    "KeyMaterialError",
    "MissingDependencyError",
    "PolicyError",
    "PrivacyBudgetExceeded",
    "ShieldError",
    "SignatureError",
    "UnsafeFileError",
    "WrongKeyError",
]  # the exception tree; the helper `about` below is imported by name


class ShieldError(Exception):
    """Root of every error torchshield raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class InputError(ShieldError):
    """Bad input or usage: a file, field or value is wrong. Exit 2."""

    exit_code = 2


class FormatError(InputError):
    """A file is not in the expected format, or in a version this release cannot read."""


class KeyMaterialError(InputError):
    """A key file or key variable is missing, malformed or unsafe to use."""


class MissingDependencyError(InputError):
    """An optional part of torchshield needs an extra that is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this feature needs the '{package}' package",
            hint=f"install it with: pip install 'torchshield[{extra}]'",
        )


class WrongKeyError(ShieldError):
    """The key given is not the one the object was sealed with. Exit 2."""

    exit_code = 2


class CheckFailed(ShieldError):
    """A check ran to the end and found a problem. Exit 1."""

    exit_code = 1


class IntegrityError(CheckFailed):
    """Bytes were changed, truncated, extended, reordered or spliced."""


class SignatureError(CheckFailed):
    """A signature is missing, does not verify, or was made by another signer."""


class UnsafeFileError(CheckFailed):
    """A model file can execute code when it is loaded."""


class PolicyError(ShieldError):
    """Refused by policy. Exit 3."""

    exit_code = 3


class AccessDenied(PolicyError):
    """The caller is known but its role does not allow this action."""


class PrivacyBudgetExceeded(PolicyError):
    """Answering would spend more privacy budget than remains."""


@contextmanager
def about(field: str) -> Iterator[None]:
    """Name ``field`` (a config field, an option, a file) at the front of any ``InputError`` raised
    inside, keeping its class and hint: ``with about("--record"): check_target(path, ...)``."""
    try:
        yield
    except MissingDependencyError:
        raise  # names its package and extra already (and takes other arguments)
    except InputError as exc:
        raise type(exc)(f"{field}: {exc.message}", hint=exc.hint) from None
