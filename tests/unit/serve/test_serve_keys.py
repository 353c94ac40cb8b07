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


# ---- the per-worker key cache and the change stamp that invalidates it ----
def test_change_stamp_lives_in_the_0600_lock_file_and_moves_only_with_key_changes(keys, db, tmp_path):
    lock = tmp_path / "serve.db.lock"
    before = db.change_stamp()
    assert isinstance(before, int) and lock.stat().st_size == 8 and lock.stat().st_mode & 0o777 == 0o600
    new = keys.create(role="predictor", models=["digits"])
    assert db.change_stamp() == before + 1
    keys.authenticate(new.token)
    assert db.change_stamp() == before + 1  # reads (and audit writes) leave it alone
    keys.revoke(new.key.key_id)
    assert db.change_stamp() == before + 2


def test_a_revocation_elsewhere_is_seen_at_once_not_after_the_cache_ttl(db, tmp_path, key_file):
    import subprocess
    import sys

    from torchshield.crypto.keys import read_key_file

    keys = KeyStore(db, read_key_file(key_file))
    keys.cache_ttl = 3600.0  # only the change stamp can tell this worker
    new = keys.create(role="predictor", models=["digits"])
    assert keys.authenticate(new.token) is not None  # cached now
    # another process: the CLI, with its own connection and its own mapping of the lock file
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / "torchshield"), "access", "revoke", new.key.key_id,
                          "--db", f"sqlite:///{tmp_path / 'serve.db'}", "--key-file", str(key_file)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert keys.authenticate(new.token) is None


def test_cached_rows_still_check_the_secret_and_the_clock(keys):
    keys.cache_ttl = 3600.0
    new = keys.create(role="predictor", models=["digits"], expires_in=0.3)
    assert keys.authenticate(new.token) is not None
    forged = new.token[:-4] + ("AAAA" if not new.token.endswith("AAAA") else "BBBB")
    assert keys.authenticate(forged) is None  # same key id, row in the cache, wrong secret
    time.sleep(0.35)
    assert keys.authenticate(new.token) is None  # expired, although its row is still cached


def test_an_edit_that_bypasses_the_stamp_is_seen_within_the_ttl(keys, tmp_path):
    import sqlite3

    keys.cache_ttl = 0.2
    new = keys.create(role="predictor", models=["digits"])
    assert keys.authenticate(new.token) is not None
    with sqlite3.connect(tmp_path / "serve.db") as raw:  # another tool: no stamp moved
        raw.execute("UPDATE serve_api_keys SET revoked_at = 1 WHERE key_id = ?", (new.key.key_id,))
    assert keys.authenticate(new.token) is not None  # the documented bound: stale for at most the TTL
    time.sleep(0.25)
    assert keys.authenticate(new.token) is None
