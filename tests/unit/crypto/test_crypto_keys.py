import os
import stat
from pathlib import Path

import pytest

from torchshield.crypto.keys import (
    MasterKey,
    UnsafeKeyFileWarning,
    read_key_file,
    resolve_master_key,
    write_key_file,
    write_passphrase_key_file,
)
from torchshield.errors import KeyMaterialError, WrongKeyError


def test_key_file_is_0600_and_round_trips(tmp_path):
    path = tmp_path / "k.key"
    key = write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path).same_as(key)
    assert read_key_file(path).key_id == key.key_id


def test_key_file_refuses_overwrite(tmp_path):
    path = tmp_path / "k.key"
    write_key_file(path)
    before = path.read_bytes()
    with pytest.raises(Exception, match="already exists"):
        write_key_file(path)
    assert path.read_bytes() == before


def test_world_readable_key_file_warns(tmp_path):
    path = tmp_path / "k.key"
    write_key_file(path)
    os.chmod(path, 0o644)
    with pytest.warns(UnsafeKeyFileWarning, match="chmod 600"):
        read_key_file(path)


def test_key_never_in_repr_or_str(master_key):
    secret_hex = master_key.secret.hex()
    assert secret_hex not in repr(master_key) and secret_hex not in str(master_key)


def test_key_id_and_derived_keys_are_independent(master_key):
    assert master_key.key_id not in master_key.secret.hex()
    assert master_key.derive("data/pseudonym") != master_key.derive("data/date-shift")
    assert master_key.derive("data/pseudonym") == MasterKey(master_key.secret).derive("data/pseudonym")


@pytest.mark.parametrize("content", [b"", b"short", b"torchshield-key-v1 !!!notbase64", b"\xff" * 40])
def test_malformed_key_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyMaterialError):
        read_key_file(path)


def test_missing_and_directory_key_files(tmp_path):
    with pytest.raises(KeyMaterialError, match="does not exist"):
        read_key_file(tmp_path / "nope.key")
    with pytest.raises(KeyMaterialError, match="directory"):
        read_key_file(tmp_path)


def test_env_resolution_order(tmp_path, monkeypatch, master_key):
    path = tmp_path / "k.key"
    file_key = write_key_file(path)
    monkeypatch.setenv("TORCHSHIELD_KEY_FILE", str(path))
    assert resolve_master_key().same_as(file_key)
    monkeypatch.setenv("TORCHSHIELD_KEY", master_key.secret.hex())
    assert resolve_master_key().same_as(master_key)  # the key variable wins over the file variable
    assert resolve_master_key(key_file=path).same_as(file_key)  # explicit wins over both
    monkeypatch.delenv("TORCHSHIELD_KEY")
    monkeypatch.delenv("TORCHSHIELD_KEY_FILE")
    assert resolve_master_key(required=False) is None
    with pytest.raises(KeyMaterialError, match="no key given"):
        resolve_master_key()


def test_keys_are_resolved_only_at_the_edge():
    """One resolver, for the CLI and the service start; it takes a key file, nothing else (issue 23:
    it used to accept a MasterKey, raw bytes, a path or None in one argument)."""
    import inspect

    params = inspect.signature(resolve_master_key).parameters
    assert list(params) == ["key_file", "required"]
    src = Path(__file__).resolve().parents[3] / "src" / "torchshield"
    callers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                     if "resolve_master_key(" in p.read_text() and p.name != "keys.py")
    assert all(c.startswith("cli/") or c == "serve/service.py" for c in callers), callers


def test_passphrase_key_file_stores_no_secret(tmp_path, monkeypatch):
    path = tmp_path / "p.key"
    key = write_passphrase_key_file(path, "correct horse battery staple")
    text = path.read_text()
    assert key.secret.hex() not in text and "scrypt" in text
    assert read_key_file(path, passphrase="correct horse battery staple").same_as(key)
    monkeypatch.setenv("TORCHSHIELD_PASSPHRASE", "correct horse battery staple")
    assert read_key_file(path).same_as(key)
    with pytest.raises(WrongKeyError):
        read_key_file(path, passphrase="wrong horse battery staple")


def test_short_passphrase_refused(tmp_path):
    with pytest.raises(KeyMaterialError, match="shorter"):
        write_passphrase_key_file(tmp_path / "p.key", "short")
