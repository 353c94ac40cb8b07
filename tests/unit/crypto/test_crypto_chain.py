"""The shared keyed hash chain (crypto/chain.py) against an independent reference (hmac computed
here from HKDF as specified) and an adversary who knows the method but not the key."""

from __future__ import annotations

import hmac
from hashlib import sha256

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from torchshield.crypto.chain import GENESIS, ChainHead, KeyedChain


def _rows(chain, n=5):
    return chain.extend(ChainHead(0, GENESIS), lambda i: f'{{"n":{i}}}', n)


def test_macs_match_an_independent_reference(master_key):
    chain = KeyedChain(master_key, "serve/audit-chain")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"torchshield/derive/v1/serve/audit-chain").derive(master_key.secret)
    rows, head = _rows(chain)
    prev = GENESIS
    for r in rows:
        assert r.mac == hmac.new(key, bytes.fromhex(prev) + r.body.encode(), sha256).hexdigest()
        prev = r.mac
    assert head == ChainHead(5, prev) and chain.verify(rows, head).ok


def test_purposes_have_separate_keys(master_key):
    a, b = KeyedChain(master_key, "serve/audit-chain"), KeyedChain(master_key, "privacy/ledger-chain")
    assert a.mac(GENESIS, "x") != b.mac(GENESIS, "x")


def test_forger_without_the_key_is_caught(master_key):
    from torchshield.crypto.keys import generate_master_key

    chain = KeyedChain(master_key, "serve/audit-chain")
    rows, head = _rows(chain)
    forged, fhead = _rows(KeyedChain(generate_master_key(), "serve/audit-chain"))
    rep = chain.verify(forged, fhead)
    assert not rep.ok and rep.first_bad == 1


@pytest.mark.parametrize("mutate,first_bad,words", [
    (lambda rows, head: (rows[:2] + rows[3:], head), 3, "missing"),
    (lambda rows, head: (rows[:-1], head), 5, "head says"),
    (lambda rows, head: (rows, None), 5, "head is missing"),
    (lambda rows, head: (rows, ChainHead(3, rows[2].mac)), 4, "past the head"),
    (lambda rows, head: (rows, ChainHead(5, "ab" * 32)), 5, "head edited"),
    (lambda rows, head: ([type(rows[0])(0, rows[0].body, GENESIS, rows[0].mac), *rows], head), 0, "outside"),
])
def test_each_tampering_is_named(master_key, mutate, first_bad, words):
    chain = KeyedChain(master_key, "serve/audit-chain")
    rows, head = _rows(chain)
    rep = chain.verify(*mutate(rows, head))
    assert not rep.ok and rep.first_bad == first_bad and words in rep.reason, rep
