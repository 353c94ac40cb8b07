"""Shared fixtures: keys and signers made fresh in a temporary folder for each test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must never pick up a developer's key from the environment.
for _var in ("TORCHSHIELD_KEY", "TORCHSHIELD_KEY_FILE", "TORCHSHIELD_PASSPHRASE"):
    os.environ.pop(_var, None)


@pytest.fixture
def master_key():
    from torchshield.crypto.keys import generate_master_key

    return generate_master_key()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    from torchshield.crypto.keys import write_key_file

    path = tmp_path / "shield.key"
    write_key_file(path)
    return path


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Path]:
    from torchshield.crypto.signing import generate_signing_key

    return generate_signing_key(tmp_path / "signer")


@pytest.fixture
def one_thread():
    """Torch on one thread: xdist puts two workers on two cores, and more threads per worker only
    oversubscribe them (small models spend more on thread hand-offs than they gain)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
