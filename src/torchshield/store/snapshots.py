"""Snapshots: immutable versions of named objects, and how users name and find them.

A snapshot is one ``put``: an object name, an optional tag, user metadata, the time, the size
and the ordered list of chunk ids. All of it lives in the sealed manifest, so listing a vault
needs its key and shows nothing to anyone else.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from torchshield.errors import FormatError, InputError
from torchshield.store.repository import Repository

__all__ = ["Snapshot", "load_snapshots", "resolve_snapshot", "validate_name"]

_MAX_NAME = 200


def validate_name(name: str, *, what: str = "object name") -> str:
    """Names become file names on restore, so refuse anything that could leave the target
    folder or confuse a file system: separators, ``..``, NUL and control characters."""
    if not name or len(name) > _MAX_NAME:
        raise InputError(f"{what} must be 1 to {_MAX_NAME} characters", hint="e.g. --name patients")
    bad = next((c for c in name if c in "/\\" or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise InputError(f"{what} {name!r} contains {bad!r}, which is not allowed",
                         hint="use letters, digits, '.', '-' and '_'; no path separators or control characters")
    if name in (".", "..") or name.startswith("-") or name != name.strip():
        raise InputError(f"{what} {name!r} is not allowed", hint="e.g. --name patients")
    return name


@dataclass
class Snapshot:
    id: str
    name: str
    tag: str | None
    created: str
    size: int
    chunks: list[tuple[str, int]] = field(repr=False)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)

    def to_manifest(self) -> dict[str, Any]:
        return {"v": 1, "name": self.name, "tag": self.tag, "created": self.created, "size": self.size,
                "metadata": self.metadata, "chunks": [[c, n] for c, n in self.chunks]}

    @classmethod
    def from_manifest(cls, snap_id: str, doc: dict[str, Any]) -> Snapshot:
        try:
            chunks = [(str(c), int(n)) for c, n in doc["chunks"]]
            snap = cls(snap_id, str(doc["name"]), doc.get("tag"), str(doc["created"]), int(doc["size"]),
                       chunks, dict(doc.get("metadata") or {}))
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"snapshot {snap_id[:8]} has a malformed manifest") from None
        if sum(n for _, n in chunks) != snap.size:
            raise FormatError(f"snapshot {snap_id[:8]}: chunk sizes do not add up to its size")
        return snap

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tag": self.tag, "created": self.created, "size": self.size,
                "chunks": len(self.chunks), "metadata": self.metadata}


def load_snapshots(repo: Repository, *, name: str | None = None) -> list[Snapshot]:
    """All snapshots (optionally of one object), oldest first."""
    snaps = [Snapshot.from_manifest(sid, repo.read_manifest(sid)) for sid in repo.snapshot_ids()]
    if name is not None:
        snaps = [s for s in snaps if s.name == name]
    return sorted(snaps, key=lambda s: (s.created, s.id))


def resolve_snapshot(repo: Repository, ref: str, *, name: str | None = None) -> Snapshot:
    """A snapshot by id or unique id prefix (at least 4 hex digits), or by ``name`` and a tag."""
    if name is not None:
        snaps = load_snapshots(repo, name=name)
        if not snaps:
            raise InputError(f"no object named {name!r} in {repo.target.url}",
                             hint="`torchshield store list` shows the names")
        if ref == "latest":
            return snaps[-1]
        hits = [s for s in snaps if s.tag == ref or s.id.startswith(ref.lower())]
        if not hits:
            raise InputError(f"object {name!r} has no version or tag {ref!r}",
                             hint=f"`torchshield store log VAULT {name}` shows its versions")
        return hits[-1]
    ref = ref.lower()
    if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
        raise InputError(f"snapshot id {ref!r} is not a hex id of at least 4 digits")
    ids = [sid for sid in repo.snapshot_ids() if sid.startswith(ref)]
    if not ids:
        raise InputError(f"no snapshot {ref} in {repo.target.url}", hint="`torchshield store list` shows ids")
    if len(ids) > 1:
        raise InputError(f"snapshot id {ref} is ambiguous ({len(ids)} match)", hint="give more digits")
    return Snapshot.from_manifest(ids[0], repo.read_manifest(ids[0]))
