"""``verify``: prove that every version in the vault can be read back exactly.

Like ``restic check --read-data``: every manifest is opened (its tag checked), every chunk a
manifest names must exist, and every chunk is read, its AEAD tag checked, its plaintext
re-hashed to its id and its length compared with the manifest. ``sample`` reads only a random
subset of the chunks (restic's ``--read-data-subset``) but still checks every manifest and the
presence of every chunk. Each problem names the chunk and every (object, snapshot) it breaks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from torchshield.errors import InputError, ShieldError
from torchshield.store.objects import inspect_chunk
from torchshield.store.repository import Repository, chunk_rel
from torchshield.store.snapshots import Snapshot

__all__ = ["Problem", "VerifyReport", "parse_sample", "verify"]


@dataclass
class Problem:
    kind: str  # missing | damaged | swapped | truncated | snapshot
    detail: str
    chunk: str | None = None
    objects: list[dict[str, str]] = field(default_factory=list)


@dataclass
class VerifyReport:
    snapshots: int = 0
    chunks_referenced: int = 0
    chunks_read: int = 0
    unreferenced_chunks: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "snapshots": self.snapshots, "chunks_referenced": self.chunks_referenced,
                "chunks_read": self.chunks_read, "unreferenced_chunks": self.unreferenced_chunks,
                "problems": [p.__dict__ for p in self.problems]}


def parse_sample(text: str | None) -> float | int | None:
    """``"10%"`` -> 0.1 (a fraction of the chunks), ``"50"`` -> 50 chunks, None -> all."""
    if text is None:
        return None
    try:
        if text.endswith("%"):
            frac = float(text[:-1]) / 100
            if 0 < frac <= 1:
                return frac
        elif int(text) > 0:
            return int(text)
    except ValueError:
        pass
    raise InputError(f"--sample {text!r} is neither a percentage (e.g. 10%) nor a positive chunk count")


def verify(repo: Repository, *, sample: float | int | None = None) -> VerifyReport:
    keys = repo.require_keys()
    report = VerifyReport()
    with repo.lock(exclusive=False):
        users: dict[str, list[dict[str, str]]] = {}
        lengths: dict[str, int] = {}
        for sid in repo.snapshot_ids():
            report.snapshots += 1
            try:
                snap = Snapshot.from_manifest(sid, repo.read_manifest(sid))
            except ShieldError as exc:
                report.problems.append(Problem("snapshot", f"snapshot {sid[:8]} cannot be opened: {exc.message}",
                                               objects=[{"snapshot": sid}]))
                continue
            for cid, length in snap.chunks:
                users.setdefault(cid, []).append({"name": snap.name, "snapshot": snap.id, "tag": snap.tag or ""})
                lengths[cid] = length
        present = repo.chunk_ids()
        report.chunks_referenced = len(users)
        report.unreferenced_chunks = len(present - users.keys())
        for cid in sorted(users.keys() - present):
            report.problems.append(Problem("missing", f"chunk {cid[:16]} is missing", cid, _dedup(users[cid])))
        to_read = sorted(users.keys() & present)
        if sample is not None:
            k = max(1, round(len(to_read) * sample)) if isinstance(sample, float) else sample
            to_read = sorted(random.SystemRandom().sample(to_read, min(k, len(to_read))))
        for cid in to_read:
            try:
                blob = repo.target.read(chunk_rel(cid))
            except FileNotFoundError:  # deleted while we ran
                reason: str | None = "missing: its file vanished during the check"
            else:
                reason = inspect_chunk(keys, bytes.fromhex(cid), blob, lengths[cid])
            report.chunks_read += 1
            if reason is not None:
                kind, _, detail = reason.partition(": ")
                report.problems.append(Problem(kind, f"chunk {cid[:16]}: {detail}", cid, _dedup(users[cid])))
    return report


def _dedup(objs: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for o in objs:
        seen.setdefault(o["snapshot"], o)
    return list(seen.values())
