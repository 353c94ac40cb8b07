"""Data de-identification: find PII in Chinese and English text and tables, transform it with
keyed, reversible or irreversible operators, and release tables under k-anonymity.

Threat model: the output of ``mask``/``kanon`` goes to people who must not learn who the
records are about (an ML team, a vendor). Keyed operators (hash, encrypt, pseudonymise, date
shift) are only as strong as the secrecy of the master key, which stays with the data owner;
masked or tokenised data is *de-identified* (PIPL art. 73), not anonymous."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torchshield._lazy import lazy_exports

__all__ = [
    "Anonymizer",
    "ENTITY_TYPES",
    "Finding",
    "RecognizerRegistry",
    "anonymize_text",
    "default_registry",
    "find_pii",
    "find_pii_batch",
    "find_pii_dataframe",
    "get_registry",
    "kanonymize",
    "load_policy",
    "mask_file",
    "scan_file",
    "unmask_text",
]

_LAZY = {name: "torchshield.data.pii" for name in ("ENTITY_TYPES", "Finding", "RecognizerRegistry", "default_registry",
                                                    "find_pii", "find_pii_batch", "find_pii_dataframe",
                                                    "get_registry")}
_LAZY.update({name: "torchshield.data.anonymize" for name in ("Anonymizer", "anonymize_text", "load_policy",
                                                               "unmask_text")})
_LAZY.update({name: "torchshield.data.tabular" for name in ("kanonymize", "mask_file", "scan_file")})

if TYPE_CHECKING:  # pragma: no cover
    from torchshield.data.anonymize import Anonymizer, anonymize_text, load_policy, unmask_text
    from torchshield.data.pii import (
        ENTITY_TYPES,
        Finding,
        RecognizerRegistry,
        default_registry,
        find_pii,
        find_pii_batch,
        find_pii_dataframe,
        get_registry,
    )
    from torchshield.data.tabular import kanonymize, mask_file, scan_file


__getattr__ = lazy_exports(__name__, _LAZY, globals())
