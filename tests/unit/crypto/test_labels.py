"""Every subkey of the master key has one registered label (torchshield.crypto.labels)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from torchshield.crypto.keys import MasterKey
from torchshield.crypto.labels import DERIVATIONS, check_label

SRC = Path(__file__).resolve().parents[3] / "src" / "torchshield"


def test_an_unregistered_label_is_refused():
    key = MasterKey(bytes(range(32)))
    with pytest.raises(ValueError, match="not registered"):
        key.derive("serve/something-new")
    with pytest.raises(ValueError):
        key.derive("watermark/trigger")  # a registered family, but missing its per-object part


def test_registered_labels_give_independent_keys_and_the_documented_hkdf():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = MasterKey(bytes(range(32)))
    a, b = key.derive("envelope/wrap"), key.derive("serve/audit-chain")
    assert a != b
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"torchshield/derive/v1/envelope/wrap").derive(bytes(range(32)))
    assert a == expected


def _literal_labels() -> list[tuple[str, str]]:
    """Every string literal (or f-string head) passed to ``.derive(...)``/``.subkey(...)`` in the package."""
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("derive", "subkey") and node.args):
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((f"{path.relative_to(SRC)}:{node.lineno}", arg.value))
                elif isinstance(arg, ast.JoinedStr):
                    text = "".join(v.value if isinstance(v, ast.Constant) else "x0" for v in arg.values)
                    found.append((f"{path.relative_to(SRC)}:{node.lineno}", text))
    return found


def test_every_chain_purpose_is_registered():
    from torchshield.privacy.ledger import CHAIN_PURPOSE

    check_label(CHAIN_PURPOSE)
    check_label("serve/audit-chain")


def test_every_label_in_the_code_is_registered():
    labels = _literal_labels()
    assert len(labels) >= len(DERIVATIONS) - 1  # the scan finds the call sites
    for _where, label in labels:
        check_label(label)  # raises, naming the label, for one that is not in the table
