"""A vault on disk: its layout, its config, its locks, and the order of its commits.

Layout (every file written whole under its final name or not at all)::

    config                 plain JSON: format, version, vault id, chunker sizes, key slots
    data/<ab>/<chunk id>   encrypted chunks, named by their keyed id (64 hex)
    snapshots/<id>         one sealed manifest per object version (32 hex, random)
    locks/<kind>-<rand>    shared (writers) and exclusive (prune, rotate) locks

Commit order is what makes a kill -9 harmless: a put writes all chunk files first, makes them
durable, and only then renames the snapshot file into place. Until that rename nothing refers to
the new chunks (they are garbage that ``prune`` removes); after it the version is complete.
Writers never modify a file: chunks are content-addressed, snapshots have fresh random ids, so
concurrent puts need no mutual exclusion, only a shared lock that keeps ``prune`` (which deletes
files) away while they run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torchshield.crypto.keys import MasterKey
from torchshield.errors import FormatError, InputError, WrongKeyError
from torchshield.store.chunking import ChunkerParams
from torchshield.store.objects import RepoKeys, open_key_slot, open_manifest, seal_key_slot
from torchshield.store.targets import Target, open_target

__all__ = ["FORMAT", "VERSION", "Repository", "VaultLocked", "chunk_rel", "is_vault", "snapshot_rel"]

FORMAT = "torchshield-store"
VERSION = 1
_SNAP_RE = re.compile(r"^[0-9a-f]{32}$")
_CHUNK_RE = re.compile(r"^[0-9a-f]{64}$")
_FOREIGN_LOCK_STALE_S = 3600.0


class VaultLocked(InputError):
    """Another process holds a lock that conflicts with this one."""


def chunk_rel(cid_hex: str) -> str:
    return f"data/{cid_hex[:2]}/{cid_hex}"


def snapshot_rel(snap_id: str) -> str:
    return f"snapshots/{snap_id}"


@dataclass
class Repository:
    """An opened vault. ``keys`` is None when opened without a master key (backup, list files)."""

    target: Target
    config: dict[str, Any]
    master: MasterKey | None = None
    keys: RepoKeys | None = None

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def init(cls, location: str | os.PathLike[str], master: MasterKey, *,
             chunker: ChunkerParams | None = None) -> Repository:
        target = open_target(location)
        if target.exists("config"):
            raise InputError(f"{target.url} is already a vault", hint="use it, or pick an empty folder")
        if target.listdir(""):
            raise InputError(f"{target.url} is not empty", hint="a vault needs an empty or new folder")
        target.makedirs("")
        for sub in ("data", "snapshots", "locks"):
            target.makedirs(sub)
        vault_id = secrets.token_bytes(16)
        keys = RepoKeys.generate(vault_id)
        config = {"format": FORMAT, "version": VERSION, "vault_id": vault_id.hex(),
                  "chunker": (chunker or ChunkerParams()).to_dict(),
                  "key_slots": {master.key_id: seal_key_slot(master, keys).hex()}}
        repo = cls(target, config, master, keys)
        repo.write_config()
        return repo

    @classmethod
    def open(cls, location: str | os.PathLike[str], master: MasterKey | None) -> Repository:
        target = open_target(location)
        config = read_config(target)
        repo = cls(target, config, master)
        if master is not None:
            repo.keys = repo.unlock(master)
        return repo

    def unlock(self, master: MasterKey) -> RepoKeys:
        slots: dict[str, str] = self.config["key_slots"]
        blob = slots.get(master.key_id)
        if blob is None:
            raise WrongKeyError(
                f"vault {self.target.url} is encrypted for key id {', '.join(sorted(slots))}, "
                f"not for the key given (id {master.key_id})",
                hint="pass the vault's key with --key-file or TORCHSHIELD_KEY_FILE")
        return open_key_slot(master, self.vault_id, bytes.fromhex(blob))

    def write_config(self) -> None:
        self.target.write_atomic("config", (json.dumps(self.config, indent=1) + "\n").encode())

    @property
    def vault_id(self) -> bytes:
        return bytes.fromhex(self.config["vault_id"])

    @property
    def chunker(self) -> ChunkerParams:
        return ChunkerParams.from_dict(self.config["chunker"])

    def require_keys(self) -> RepoKeys:
        if self.keys is None or self.master is None:
            raise InputError("this operation needs the vault's key", hint="pass --key-file")
        return self.keys

    # -- listing -------------------------------------------------------------------------
    def chunk_ids(self) -> set[str]:
        out: set[str] = set()
        for prefix in self.target.listdir("data"):
            if len(prefix) == 2:
                out.update(n for n in self.target.listdir(f"data/{prefix}") if _CHUNK_RE.match(n))
        return out

    def snapshot_ids(self) -> list[str]:
        return sorted(n for n in self.target.listdir("snapshots") if _SNAP_RE.match(n))

    def read_manifest(self, snap_id: str) -> dict[str, Any]:
        self.require_keys()
        assert self.master is not None
        try:
            blob = self.target.read(snapshot_rel(snap_id))
        except FileNotFoundError:
            raise InputError(f"no snapshot {snap_id[:8]} in {self.target.url}") from None
        return open_manifest(self.master, self.vault_id, snap_id, blob)

    # -- locks ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, exclusive: bool) -> Iterator[None]:
        """Shared for writers, exclusive for prune and key rotation (restic's protocol: create
        our lock file with O_EXCL, then look for a conflicting one; of two racing processes at
        least one sees the other and backs off). Locks of dead processes on this host, and of
        other hosts after an hour, are stale and removed."""
        kind = "exclusive" if exclusive else "shared"
        name = f"{kind}-{secrets.token_hex(8)}"
        info = {"kind": kind, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        self.target.makedirs("locks")
        self.target.create_exclusive(f"locks/{name}", json.dumps(info).encode())
        try:
            for other in self.target.listdir("locks"):
                if other == name or other.startswith(".tmp"):
                    continue
                if not exclusive and not other.startswith("exclusive-"):
                    continue
                holder = self._live_lock(other)
                if holder is not None:
                    raise VaultLocked(
                        f"vault {self.target.url} is locked ({holder['kind']}) by pid {holder.get('pid')} "
                        f"on {holder.get('host')}",
                        hint="wait for that command to finish; a lock of a dead process is removed "
                             "automatically")
            yield
        finally:
            self.target.delete(f"locks/{name}")

    def _live_lock(self, name: str) -> dict[str, Any] | None:
        try:
            info = json.loads(self.target.read(f"locks/{name}"))
        except FileNotFoundError:
            return None
        except ValueError:  # lock files are written whole (link of a complete file): damaged by hand
            info = {"kind": f"unreadable lock file locks/{name}"}
        if _lock_is_stale(info):
            self.target.delete(f"locks/{name}")
            return None
        return dict(info)


def _lock_is_stale(info: dict[str, Any]) -> bool:
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return time.time() - float(info.get("time", 0)) > _FOREIGN_LOCK_STALE_S


def read_config(target: Target) -> dict[str, Any]:
    try:
        raw = target.read("config")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise InputError(f"{target.url} is not a torchshield vault (no config file)",
                         hint="create one with: torchshield store init " + target.url) from None
    try:
        config = json.loads(raw)
        ok = isinstance(config, dict) and config.get("format") == FORMAT
    except ValueError:
        ok = False
    if not ok:
        raise FormatError(f"{target.url}/config is not a torchshield vault config",
                          hint="point at a folder made by `torchshield store init`")
    if config.get("version") != VERSION:
        raise FormatError(f"vault {target.url} has format version {config.get('version')!r}; "
                          f"this torchshield reads version {VERSION}",
                          hint="use the torchshield release that wrote it")
    if not isinstance(config.get("key_slots"), dict) or not isinstance(config.get("vault_id"), str):
        raise FormatError(f"{target.url}/config is damaged (no key slots or vault id)")
    return config


def is_vault(location: str | os.PathLike[str]) -> bool:
    """True if ``location`` holds a vault this release can open (used by ``keys rotate``)."""
    try:
        read_config(open_target(location))
    except (InputError, OSError):
        return False
    return True

