"""``prune``: forget old versions by a keep policy, then delete the chunks nothing refers to.

Policy per object name, restic's rules: ``keep_last`` keeps the N newest versions,
``keep_daily`` keeps the newest version of each of the N most recent days that have one; a
version kept by either rule stays. With no rule, no version is forgotten and prune only collects
garbage (chunks of crashed puts, chunks of forgotten versions, stray temporary files).

Runs under the exclusive lock, so no put can commit a snapshot that refers to a chunk being
deleted. Order: snapshot files first, then chunks; a crash in between leaves only garbage. If any
manifest cannot be read, no chunk is deleted (it might belong to that version).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchshield.errors import InputError, IntegrityError, ShieldError
from torchshield.store.repository import Repository, chunk_rel, snapshot_rel
from torchshield.store.snapshots import Snapshot, load_snapshots

__all__ = ["PruneReport", "prune", "select_forget"]


@dataclass
class PruneReport:
    kept: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    chunks_deleted: int = 0
    bytes_freed: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def select_forget(snaps: list[Snapshot], *, keep_last: int | None, keep_daily: int | None) -> list[Snapshot]:
    if keep_last is None and keep_daily is None:
        return []
    for label, value in (("--keep-last", keep_last), ("--keep-daily", keep_daily)):
        if value is not None and value < 0:
            raise InputError(f"{label} must be 0 or more")
    forget = []
    by_name: dict[str, list[Snapshot]] = {}
    for s in snaps:
        by_name.setdefault(s.name, []).append(s)
    for versions in by_name.values():
        newest_first = sorted(versions, key=lambda s: (s.created, s.id), reverse=True)
        keep = {s.id for s in newest_first[: keep_last or 0]}
        days: set[str] = set()
        for s in newest_first:
            day = s.created_at.date().isoformat()
            if day not in days and len(days) < (keep_daily or 0):
                days.add(day)
                keep.add(s.id)
        forget.extend(s for s in newest_first if s.id not in keep)
    return forget


def prune(repo: Repository, *, keep_last: int | None = None, keep_daily: int | None = None,
          dry_run: bool = False) -> PruneReport:
    repo.require_keys()
    report = PruneReport(dry_run=dry_run)
    with repo.lock(exclusive=True):
        try:
            snaps = load_snapshots(repo)
        except ShieldError as exc:
            raise IntegrityError(f"prune stopped before deleting anything: {exc.message}",
                                 hint="run `torchshield store verify` and repair the vault first") from None
        forget = select_forget(snaps, keep_last=keep_last, keep_daily=keep_daily)
        gone = {s.id for s in forget}
        report.forgotten = [s.id for s in forget]
        report.kept = [s.id for s in snaps if s.id not in gone]
        referenced = {cid for s in snaps if s.id not in gone for cid, _ in s.chunks}
        garbage = sorted(repo.chunk_ids() - referenced)
        report.chunks_deleted = len(garbage)
        report.bytes_freed = sum(repo.target.size(chunk_rel(c)) for c in garbage)
        if dry_run:
            return report
        for sid in report.forgotten:
            repo.target.delete(snapshot_rel(sid))
        repo.target.sync_dirs({"snapshots"})
        for cid in garbage:
            repo.target.delete(chunk_rel(cid))
        _remove_temporaries(repo)
    return report


def _remove_temporaries(repo: Repository) -> None:
    """Temporary files left by killed writers; safe to delete while we hold the exclusive lock."""
    folders = ["", "snapshots", "locks"] + [f"data/{p}" for p in repo.target.listdir("data")]
    for folder in folders:
        for name in repo.target.listdir(folder):
            if name.startswith(".tmp-"):
                repo.target.delete(f"{folder}/{name}" if folder else name)
