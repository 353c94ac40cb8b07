"""Key rotation: re-wrap the vault's keys under a new master key without rewriting any chunk.

What is re-wrapped: the key slot in ``config`` (the repository keys) and the data key of every
snapshot manifest; chunks are encrypted under the repository chunk key, which does not change,
so a 1 TB vault rotates by rewriting a few kilobytes per version.

Crash safety and resumption: (1) a slot for the new key is added next to the old one, (2) each
snapshot is re-wrapped by an atomic rewrite of its (small) file, (3) the old slot is removed.
Killed anywhere, the vault stays openable: before (3) with either key for the config, and each
snapshot with the key that wrapped it. Running the rotation again with the same two keys finishes
the job; snapshots already under the new key are skipped.

What rotation does not do: a holder of the old master key who already copied the repository
keys can still decrypt chunks (they are not re-encrypted); rotating protects against a leaked
master key going forward, not against data already exfiltrated (restic and borg have the same
property; re-encrypting everything is a copy to a fresh vault).
"""

from __future__ import annotations

import os

from torchshield.crypto.keys import MasterKey
from torchshield.errors import InputError, WrongKeyError
from torchshield.store.objects import rewrap_blob, sealed_key_id
from torchshield.store.repository import Repository, snapshot_rel
from torchshield.store.targets import crash_point

__all__ = ["rotate_master_key"]


def rotate_master_key(vault: str | os.PathLike[str], old: MasterKey, new: MasterKey) -> int:
    """Re-wrap every key of ``vault`` from ``old`` to ``new``; return how many were re-wrapped."""
    if old.same_as(new):
        raise InputError("the old and the new key are the same key", hint="create a new one: torchshield keys init")
    repo = Repository.open(vault, None)
    slots: dict[str, str] = repo.config["key_slots"]
    count = 0
    with repo.lock(exclusive=True):
        if new.key_id not in slots:
            repo.unlock(old)  # WrongKeyError naming the vault's key id; authenticates before any write
            blob = bytes.fromhex(slots[old.key_id])
            slots[new.key_id] = rewrap_blob(old, new, blob, vault_id=repo.vault_id, snap_id=None).hex()
            repo.write_config()
            count += 1
        repo.unlock(new)
        for sid in repo.snapshot_ids():
            blob = repo.target.read(snapshot_rel(sid))
            if sealed_key_id(blob) == new.key_id:
                continue
            if sealed_key_id(blob) != old.key_id:
                raise WrongKeyError(f"snapshot {sid[:8]} is wrapped by key id {sealed_key_id(blob)}, "
                                    "neither the old nor the new key")
            repo.target.write_atomic(snapshot_rel(sid),
                                     rewrap_blob(old, new, blob, vault_id=repo.vault_id, snap_id=sid))
            count += 1
            crash_point("rotate-snapshot")
        repo.target.sync_dirs({"snapshots"})
        if old.key_id in slots:
            del slots[old.key_id]
            repo.write_config()
    return count
