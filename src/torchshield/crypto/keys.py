"""Master keys (symmetric, 32 bytes) and where they come from.

A master key never encrypts user data directly: it wraps per-object data keys (see
``envelope``) and derives purpose-bound subkeys with HKDF (``MasterKey.derive``). Its
``key_id`` is an HKDF output, so publishing it reveals nothing about the key.

Sources, in the order ``resolve_master_key`` (called once, at the edge) tries them: a key file, the
``TORCHSHIELD_KEY`` variable (the key itself, base64url or hex), the ``TORCHSHIELD_KEY_FILE``
variable (a path). A key file is either a raw key (``torchshield-key-v1 <base64url>``) or a
passphrase key file that stores only scrypt parameters; its passphrase comes from
``TORCHSHIELD_PASSPHRASE`` or an interactive prompt.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from torchshield.atomic import atomic_write_bytes
from torchshield.crypto.labels import DERIVE_INFO_PREFIX, KEY_ID_INFO, check_label
from torchshield.errors import KeyMaterialError, WrongKeyError

__all__ = [
    "KEY_SIZE",
    "MasterKey",
    "UnsafeKeyFileWarning",
    "generate_master_key",
    "read_key_file",
    "resolve_master_key",
    "write_key_file",
    "write_passphrase_key_file",
]

KEY_SIZE = 32
_RAW_PREFIX = "torchshield-key-v1"
_PASSPHRASE_FORMAT = "torchshield-passphrase-key"
# scrypt cost: 2**17 * 8 * 128 B = 128 MiB of memory, ~0.3 s here; parameters are stored, so
# later releases can raise them without breaking old files.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**17, 8, 1


class UnsafeKeyFileWarning(UserWarning):
    """A key file can be read by other users of this machine."""


def _hkdf(key: bytes, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


@dataclass(frozen=True)
class MasterKey:
    """A 32-byte master key. ``repr`` and ``str`` never show the key bytes."""

    secret: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, (bytes, bytearray)) or len(self.secret) != KEY_SIZE:
            raise KeyMaterialError(f"a master key must be exactly {KEY_SIZE} bytes",
                                   hint="create one with: torchshield keys init --out shield.key")
        object.__setattr__(self, "secret", bytes(self.secret))
        object.__setattr__(self, "key_id", _hkdf(self.secret, KEY_ID_INFO, 8).hex())

    @property
    def key_id_bytes(self) -> bytes:
        return bytes.fromhex(self.key_id)

    def derive(self, label: str, length: int = 32) -> bytes:
        """A subkey bound to ``label`` (e.g. ``"data/keyed-hash"``); different labels give independent keys.
        Every label is registered, with its one purpose, in ``torchshield.crypto.labels``."""
        check_label(label)
        return _hkdf(self.secret, DERIVE_INFO_PREFIX + label.encode(), length)

    def same_as(self, other: MasterKey) -> bool:
        return hmac.compare_digest(self.secret, other.secret)

    def __str__(self) -> str:
        return f"MasterKey(key_id={self.key_id})"


def generate_master_key() -> MasterKey:
    return MasterKey(secrets.token_bytes(KEY_SIZE))


def _encode_raw(key: MasterKey) -> bytes:
    return f"{_RAW_PREFIX} {base64.urlsafe_b64encode(key.secret).decode()}\n".encode()


def _decode_key_text(text: str, where: str) -> MasterKey:
    text = text.strip()
    if text.startswith(_RAW_PREFIX):
        text = text[len(_RAW_PREFIX):].strip()
    raw: bytes | None = None
    if len(text) == 2 * KEY_SIZE:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != KEY_SIZE:
        raise KeyMaterialError(f"{where} does not hold a {KEY_SIZE}-byte key (base64url or hex)",
                               hint="create one with: torchshield keys init --out shield.key")
    return MasterKey(raw)


def write_key_file(path: str | os.PathLike[str], key: MasterKey | None = None, *,
                   overwrite: bool = False) -> MasterKey:
    """Write ``key`` (a new one by default) to ``path`` with mode 0600; refuse to overwrite."""
    key = key or generate_master_key()
    atomic_write_bytes(Path(path), _encode_raw(key), mode=0o600, overwrite=overwrite)
    return key


def write_passphrase_key_file(path: str | os.PathLike[str], passphrase: str, *,
                              overwrite: bool = False) -> MasterKey:
    """Write scrypt parameters (no secret) to ``path``; the key is re-derived from the passphrase."""
    if len(passphrase) < 12:
        raise KeyMaterialError("the passphrase is shorter than 12 characters",
                               hint="use a longer passphrase or a random key file (keys init)")
    salt = secrets.token_bytes(16)
    key = _derive_from_passphrase(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    doc = {"format": _PASSPHRASE_FORMAT, "version": 1, "kdf": "scrypt",
           "salt": base64.b64encode(salt).decode(), "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P,
           "key_id": key.key_id}
    atomic_write_bytes(Path(path), (json.dumps(doc, indent=1) + "\n").encode(), mode=0o600,
                       overwrite=overwrite)
    return key


def _derive_from_passphrase(passphrase: str, salt: bytes, n: int, r: int, p: int) -> MasterKey:
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p)
    return MasterKey(kdf.derive(passphrase.encode()))


def _prompt_passphrase() -> str:
    import getpass

    return getpass.getpass("torchshield passphrase: ")


def read_key_file(path: str | os.PathLike[str], *,
                  passphrase: str | Callable[[], str] | None = None) -> MasterKey:
    """Read a raw or passphrase key file. Warns (UnsafeKeyFileWarning) if others can read it."""
    p = Path(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise KeyMaterialError(f"key file {p} is a directory", hint="pass the key file itself")
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(f"key file {p} does not exist",
                               hint="create one with: torchshield keys init --out " + p.name) from None
    except PermissionError:
        raise KeyMaterialError(f"key file {p} cannot be read (permission denied)") from None
    if st.st_mode & 0o077:
        warnings.warn(f"key file {p} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                      f"fix it with: chmod 600 {p}", UnsafeKeyFileWarning, stacklevel=2)
    if len(data) == KEY_SIZE and not data.startswith(_RAW_PREFIX.encode()):
        return MasterKey(data)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyMaterialError(f"key file {p} is not a torchshield key file",
                               hint="create one with: torchshield keys init") from None
    if text.lstrip().startswith("{"):
        return _read_passphrase_file(p, text, passphrase)
    return _decode_key_text(text, f"key file {p}")


def _read_passphrase_file(p: Path, text: str, passphrase: str | Callable[[], str] | None) -> MasterKey:
    try:
        doc = json.loads(text)
        if doc.get("format") != _PASSPHRASE_FORMAT or doc.get("kdf") != "scrypt":
            raise ValueError
        salt = base64.b64decode(doc["salt"])
        n, r, par = int(doc["n"]), int(doc["r"]), int(doc["p"])
        expected_id = str(doc["key_id"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise KeyMaterialError(f"key file {p} is not a valid passphrase key file") from None
    if not (2**10 <= n <= 2**22 and 1 <= r <= 32 and 1 <= par <= 16):
        raise KeyMaterialError(f"key file {p} has scrypt parameters out of range",
                               hint="recreate it with: torchshield keys init --passphrase")
    if passphrase is None:
        passphrase = os.environ.get("TORCHSHIELD_PASSPHRASE") or _prompt_passphrase
    value = passphrase() if callable(passphrase) else passphrase
    key = _derive_from_passphrase(value, salt, n, r, par)
    if not hmac.compare_digest(key.key_id, expected_id):
        raise WrongKeyError(f"the passphrase does not open key file {p}",
                            hint="check TORCHSHIELD_PASSPHRASE or type it again")
    return key


def resolve_master_key(key_file: str | os.PathLike[str] | None = None, *,
                       required: bool = True) -> MasterKey | None:
    """Find the master key at the edge (the CLI, the service's start): ``key_file``, then
    $TORCHSHIELD_KEY, then $TORCHSHIELD_KEY_FILE. It is the only function that reads the
    environment for a key; everything below the edge takes a :class:`MasterKey` and never looks."""
    if key_file is not None:
        return read_key_file(key_file)
    env_key = os.environ.get("TORCHSHIELD_KEY")
    if env_key:
        return _decode_key_text(env_key, "$TORCHSHIELD_KEY")
    env_file = os.environ.get("TORCHSHIELD_KEY_FILE")
    if env_file:
        return read_key_file(env_file)
    if required:
        raise KeyMaterialError("no key given",
                               hint="pass --key-file, or set TORCHSHIELD_KEY_FILE or TORCHSHIELD_KEY")
    return None
