"""``put``: chunk a file, encrypt the chunks the vault does not have yet, commit a snapshot.

Nothing of a version is visible before its snapshot file is renamed into place, and that
happens only after every chunk it names is durable (see ``repository``): a put killed at any
point leaves the vault as it was, plus unreferenced chunks for ``prune`` to collect.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from torchshield.errors import InputError
from torchshield.store.chunking import iter_chunks
from torchshield.store.objects import chunk_id, seal_chunk, seal_manifest
from torchshield.store.repository import Repository, chunk_rel, snapshot_rel
from torchshield.store.snapshots import Snapshot, validate_name
from torchshield.store.targets import crash_point

__all__ = ["PutResult", "put_file", "put_stream"]


@dataclass
class PutResult:
    snapshot: Snapshot
    chunks: int
    new_chunks: int
    bytes_read: int
    bytes_written: int

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot.summary(), "chunks": self.chunks, "new_chunks": self.new_chunks,
                "bytes_read": self.bytes_read, "bytes_written": self.bytes_written}


def put_file(repo: Repository, path: str | os.PathLike[str], *, name: str, tag: str | None = None,
             metadata: dict[str, str] | None = None) -> PutResult:
    src = Path(path)
    if not src.is_file():
        raise InputError(f"{src} is not a regular file", hint="put stores one file per object")
    with open(src, "rb", buffering=0) as fh:
        return put_stream(repo, fh, name=name, tag=tag, metadata=metadata)


def put_stream(repo: Repository, stream: BinaryIO, *, name: str, tag: str | None = None,
               metadata: dict[str, str] | None = None) -> PutResult:
    validate_name(name)
    if tag is not None:
        validate_name(tag, what="tag")
    keys = repo.require_keys()
    assert repo.master is not None
    with repo.lock(exclusive=False):
        have = repo.chunk_ids()
        made_dirs: set[str] = set()
        chunks: list[tuple[str, int]] = []
        size = new = written = 0
        for data in iter_chunks(stream, repo.chunker, keys.chunker_seed):
            cid = chunk_id(keys, data)
            cid_hex = cid.hex()
            chunks.append((cid_hex, len(data)))
            size += len(data)
            if cid_hex in have:
                continue
            folder = f"data/{cid_hex[:2]}"
            if folder not in made_dirs:
                repo.target.makedirs(folder)
                made_dirs.add(folder)
            blob = seal_chunk(keys, cid, data)
            repo.target.write_atomic(chunk_rel(cid_hex), blob)
            have.add(cid_hex)
            new += 1
            written += len(blob)
            crash_point("chunk-written")
        repo.target.sync_dirs(made_dirs)
        crash_point("before-commit")
        snap = Snapshot(secrets.token_hex(16), name, tag, datetime.now(UTC).isoformat(), size,
                        chunks, dict(metadata or {}))
        blob = seal_manifest(repo.master, repo.vault_id, snap.id, snap.to_manifest())
        repo.target.write_atomic(snapshot_rel(snap.id), blob)
        repo.target.sync_dirs({"snapshots"})
        crash_point("committed")
        return PutResult(snap, len(chunks), new, size, written + len(blob))
