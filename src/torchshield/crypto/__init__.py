"""The only package that touches cryptography's primitives: master keys, envelope
encryption, streaming AEAD, Ed25519 signatures, and crash-safe file writes."""

from torchshield.crypto.envelope import WrappedKey, open_sealed, rewrap, seal, unwrap_data_key, wrap_data_key
from torchshield.crypto.keys import (
    MasterKey,
    generate_master_key,
    read_key_file,
    resolve_master_key,
    write_key_file,
)
from torchshield.crypto.stream import decrypt_file, encrypt_file

__all__ = [
    "MasterKey",
    "WrappedKey",
    "decrypt_file",
    "encrypt_file",
    "generate_master_key",
    "open_sealed",
    "read_key_file",
    "resolve_master_key",
    "rewrap",
    "seal",
    "unwrap_data_key",
    "wrap_data_key",
    "write_key_file",
]
