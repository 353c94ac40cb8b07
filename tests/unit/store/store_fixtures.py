"""Helpers shared by the store tests: a vault with small chunks (many chunks from small files,
so tests stay fast) and a way to run store operations in a child process that can be killed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from torchshield.crypto.keys import MasterKey
from torchshield.store import Repository
from torchshield.store.chunking import ChunkerParams

SMALL = ChunkerParams(min_size=2048, avg_size=8192, max_size=32768)


def make_vault(path: Path, key: MasterKey) -> Repository:
    return Repository.init(path, key, chunker=SMALL)


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def child(code: str, *, env: dict[str, str] | None = None, wait: bool = True):  # type: ignore[no-untyped-def]
    """Run python ``code`` in a child process (the store API imported as ``store``)."""
    prelude = ("import sys\nfrom torchshield import store\nfrom torchshield.crypto.keys import MasterKey\n")
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.Popen([sys.executable, "-c", prelude + code], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if wait:
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out.decode(), err.decode()
    return proc


def put_code(vault: Path, key: MasterKey, src: Path, name: str) -> str:
    return (f"repo = store.Repository.open({str(vault)!r}, MasterKey(bytes.fromhex({key.secret.hex()!r})))\n"
            f"res = store.put_file(repo, {str(src)!r}, name={name!r})\nprint(res.snapshot.id)\n")
