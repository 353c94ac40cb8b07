"""API keys: 256-bit random tokens shown once, stored as a keyed hash, refused when malformed,
unknown, expired or revoked."""

from __future__ import annotations

import base64
import time

import pytest

from torchshield.errors import InputError
from torchshield.serve.access.keys import KeyStore, parse_duration


@pytest.fixture
def keys(db, master_key):
    return KeyStore(db, master_key)


def test_token_is_256_bit_and_only_its_keyed_hash_is_stored(keys, db, tmp_path):
    new = keys.create(role="predictor", models=["digits"])
    secret = new.token.split("_", 2)[2]
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("serve.db*"))
    assert secret.encode() not in raw and new.token.encode() not in raw
    assert new.token not in repr(new)
    assert keys.authenticate(new.token).key_id == new.key.key_id


@pytest.mark.parametrize("token", [None, "", "tsk_", "Bearer x", "tsk_00000000000000ff_" + "A" * 43,
                                   "' OR 1=1 --", "tsk_' OR '1'='1_" + "A" * 43, "x" * 5000])
def test_unknown_or_malformed_tokens_are_refused(keys, token):
    keys.create(role="admin")
    assert keys.authenticate(token) is None


def test_wrong_secret_with_right_id_is_refused(keys):
    new = keys.create(role="admin")
    forged = new.token[:-4] + ("AAAA" if not new.token.endswith("AAAA") else "BBBB")
    assert keys.authenticate(forged) is None


def test_other_master_key_cannot_authenticate(keys, db):
    from torchshield.crypto.keys import generate_master_key

    new = keys.create(role="admin")
    assert KeyStore(db, generate_master_key()).authenticate(new.token) is None


def test_expiry_and_revocation(keys):
    short = keys.create(role="predictor", models=["digits"], expires_in=0.3)
    assert keys.authenticate(short.token) is not None
    time.sleep(0.35)
    assert keys.authenticate(short.token) is None and keys.get(short.key.key_id).status() == "expired"
    other = keys.create(role="predictor", models=["digits"])
    assert keys.revoke(other.key.key_id) and not keys.revoke(other.key.key_id)
    assert keys.authenticate(other.token) is None and keys.get(other.key.key_id).status() == "revoked"


@pytest.mark.parametrize("kwargs", [dict(role="root"), dict(role="predictor", models=["../etc"]),
                                    dict(role="predictor", models=["*", "digits"]),
                                    dict(role="predictor", rate_per_s=-1)])
def test_bad_key_requests_are_input_errors(keys, kwargs):
    with pytest.raises(InputError):
        keys.create(**kwargs)


@pytest.mark.parametrize("text,seconds", [("90m", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "-1d", "0d", "1y", "1d; drop table"])
def test_parse_duration_rejects(text):
    with pytest.raises(InputError):
        parse_duration(text)
