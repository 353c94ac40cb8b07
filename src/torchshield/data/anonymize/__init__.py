"""Operators that transform PII, the policy that maps columns and entity types to them, and the
anonymizer that applies a policy to text and tables."""

from torchshield.data.anonymize.anonymizer import Anonymizer, anonymize_text
from torchshield.data.anonymize.operators import (
    OPERATORS,
    TOKEN_PATTERN,
    Cell,
    KeyedContext,
    Operator,
    decrypt_token,
    make_operator,
)
from torchshield.data.anonymize.policy import DEFAULT_POLICY, ColumnRule, Policy, load_policy
from torchshield.data.anonymize.unmask import unmask_text

__all__ = [
    "Anonymizer",
    "Cell",
    "ColumnRule",
    "DEFAULT_POLICY",
    "KeyedContext",
    "OPERATORS",
    "Operator",
    "Policy",
    "TOKEN_PATTERN",
    "anonymize_text",
    "decrypt_token",
    "load_policy",
    "make_operator",
    "unmask_text",
]
