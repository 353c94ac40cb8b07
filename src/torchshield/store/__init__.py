"""Encrypted, versioned, deduplicating artifact store (``torchshield store``).

Open a vault with a master key, ``put`` files as named, immutable versions, ``get`` them back,
``backup`` the vault anywhere fsspec reaches, ``verify`` it, ``restore`` from it, ``prune`` old
versions and rotate the master key without rewriting data. Design and threat model: ``objects``
(keys and formats) and ``repository`` (layout and commit order); docs/store.md for users.
"""

from torchshield.partials import sweep_partials
from torchshield.store.backup import BackupResult, backup
from torchshield.store.extract import get_object, restore
from torchshield.store.ingest import PutResult, put_file, put_stream
from torchshield.store.prune import PruneReport, prune
from torchshield.store.repository import Repository, VaultLocked, is_vault
from torchshield.store.rotate import rotate_master_key
from torchshield.store.snapshots import Snapshot, load_snapshots, resolve_snapshot
from torchshield.store.verify import VerifyReport, verify

__all__ = [
    "BackupResult",
    "PruneReport",
    "PutResult",
    "Repository",
    "Snapshot",
    "VaultLocked",
    "VerifyReport",
    "backup",
    "get_object",
    "is_vault",
    "load_snapshots",
    "prune",
    "put_file",
    "put_stream",
    "resolve_snapshot",
    "restore",
    "rotate_master_key",
    "sweep_partials",
    "verify",
]
