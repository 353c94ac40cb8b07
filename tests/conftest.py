"""Shared fixtures: keys and signers made fresh in a temporary folder for each test.

Determinism: a test must give the same answer however it is ordered, on whichever xdist worker.
Every test (and every module, for module-scoped fixtures) starts from seeds derived from its own node
id: Python's, NumPy's and torch's global generators, and the ``secrets`` functions that the product
draws keys, mark secrets, salts and nonces from, which here come from a DRBG seeded the same way. A
statistical test is then a fixed draw from its distribution; it is still written with a bound derived
from the error rate it claims, so that it would hold for any draw. Processes that a test starts (CLI
subprocesses, servers) use the real OS entropy.
"""

from __future__ import annotations

import os
import random
import secrets
import zlib
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis: the same examples on every run (no example database carried between runs).
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.load_profile("deterministic")

# `make test` runs two xdist workers on two cores: torch gets one thread per worker, here and in every
# process a test starts (CLI runs, servers). With torch's default (a thread per core) four or more
# compute threads spin-wait for two cores, and on a loaded machine that starved a test's server
# past its client's timeout (a red CI run). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Tests must never pick up a developer's key from the environment.
for _var in ("TORCHSHIELD_KEY", "TORCHSHIELD_KEY_FILE", "TORCHSHIELD_PASSPHRASE"):
    os.environ.pop(_var, None)


class _SeededSecrets:
    """Stand-ins for ``secrets.token_bytes``/``token_hex``/``token_urlsafe``/``randbits``/``randbelow``/
    ``choice``, drawn from one ``random.Random`` reseeded per test. Test-only: never in the product."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def reseed(self, name: str) -> None:
        seed = zlib.crc32(name.encode())
        self.rng.seed(seed)
        random.seed(seed)
        import numpy as np

        np.random.seed(seed)
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a core dependency
            return
        torch.manual_seed(seed)

    def token_bytes(self, n: int | None = None) -> bytes:
        return self.rng.randbytes(32 if n is None else n)

    def token_hex(self, n: int | None = None) -> str:
        return self.token_bytes(n).hex()

    def token_urlsafe(self, n: int | None = None) -> str:
        import base64

        return base64.urlsafe_b64encode(self.token_bytes(n)).rstrip(b"=").decode("ascii")

    def randbits(self, k: int) -> int:
        return self.rng.getrandbits(k)

    def randbelow(self, n: int) -> int:
        return self.rng.randrange(n)

    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]


_SEEDED = _SeededSecrets()


@pytest.fixture(scope="session", autouse=True)
def _seeded_secrets():
    saved = {name: getattr(secrets, name) for name in
             ("token_bytes", "token_hex", "token_urlsafe", "randbits", "randbelow", "choice")}
    for name in saved:
        setattr(secrets, name, getattr(_SEEDED, name))
    yield
    for name, fn in saved.items():
        setattr(secrets, name, fn)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The same as OMP_NUM_THREADS above, in case torch was imported before this file."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def _module_seed(request, _seeded_secrets):
    """Module-scoped fixtures (a trained model, a marked model) start from the module's own seed."""
    _SEEDED.reseed(request.module.__name__)


@pytest.fixture(autouse=True)
def _test_seed(request, _module_seed):
    _SEEDED.reseed(request.node.nodeid)


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
