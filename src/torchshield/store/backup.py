"""``backup``: copy a vault to another place (a folder, ``memory://``, any fsspec URL), incrementally.

The copy is of encrypted files, so it needs no key and the backup target learns no more than
the vault itself would tell. Incremental: chunks are immutable and named by content, so only
chunk names missing at the target are copied; snapshot files and the config are small and are
copied when missing or different (a key rotation rewrites them).

Order keeps the target consistent at every instant, as a put does: chunks first, then
snapshots, then the config. A backup killed at any point leaves the target readable at its
previous state plus unreferenced chunks; running it again completes it. Versions pruned at the
source are kept at the target (prune the target on its own schedule). A chunk damaged at the
source is copied as it is: verify the source, or the backup, with the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torchshield.errors import InputError
from torchshield.store.repository import Repository, chunk_rel, read_config, snapshot_rel
from torchshield.store.targets import crash_point, open_target

__all__ = ["BackupResult", "backup"]


@dataclass
class BackupResult:
    target: str
    chunks_copied: int = 0
    chunks_skipped: int = 0
    snapshots_copied: int = 0
    bytes_copied: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _open_or_create_target(source: Repository, location: str | os.PathLike[str]) -> Repository:
    target = open_target(location)
    if target.exists("config"):
        config = read_config(target)
        if config["vault_id"] != source.config["vault_id"]:
            raise InputError(f"{target.url} holds another vault (id {config['vault_id'][:8]}, "
                             f"not {source.config['vault_id'][:8]})", hint="back up into an empty folder")
        return Repository(target, config)
    if target.listdir(""):
        raise InputError(f"backup target {target.url} is neither empty nor a copy of this vault",
                         hint="back up into an empty folder")
    for sub in ("", "data", "snapshots", "locks"):
        target.makedirs(sub)
    target.write_atomic("config", source.target.read("config"))
    return Repository(target, read_config(target))


def backup(source_location: str | os.PathLike[str], target_location: str | os.PathLike[str]) -> BackupResult:
    source = Repository.open(source_location, None)
    dest = _open_or_create_target(source, target_location)
    result = BackupResult(dest.target.url)
    with source.lock(exclusive=False), dest.lock(exclusive=False):
        have = dest.chunk_ids()
        made: set[str] = set()
        for cid in sorted(source.chunk_ids()):
            if cid in have:
                result.chunks_skipped += 1
                continue
            folder = f"data/{cid[:2]}"
            if folder not in made:
                dest.target.makedirs(folder)
                made.add(folder)
            blob = source.target.read(chunk_rel(cid))
            dest.target.write_atomic(chunk_rel(cid), blob)
            result.chunks_copied += 1
            result.bytes_copied += len(blob)
            crash_point("backup-chunk")
        dest.target.sync_dirs(made)
        for sid in source.snapshot_ids():
            blob = source.target.read(snapshot_rel(sid))
            if dest.target.exists(snapshot_rel(sid)) and dest.target.read(snapshot_rel(sid)) == blob:
                continue
            dest.target.write_atomic(snapshot_rel(sid), blob)
            result.snapshots_copied += 1
            result.bytes_copied += len(blob)
        dest.target.sync_dirs({"snapshots"})
        config = source.target.read("config")
        if dest.target.read("config") != config:
            dest.target.write_atomic("config", config)
            result.bytes_copied += len(config)
    return result
