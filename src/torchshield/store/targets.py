"""Where a vault's files live: a local folder, or any fsspec URL (``memory://``, ``s3://``...).

The store needs only a handful of operations from its storage, and they are the contract
that makes it crash safe:

* ``write_atomic`` — the file appears whole under its final name or not at all (temporary
  name, then rename). Locally the data is fsync'ed before the rename and the folder after
  it, so a power cut cannot reorder "chunk written" after "snapshot committed".
* ``create_exclusive`` — succeeds for exactly one of several racing writers (``O_EXCL``
  locally, mode ``"xb"`` on fsspec), which is all the lock protocol needs.

Local folders get a direct ``os`` implementation (fsync, ``O_EXCL``, no fsspec overhead on a
1 GiB put); everything else goes through fsspec. The repository code above this module is the
same for both. Paths handed in are relative, ``/``-separated and built by the store itself,
never from user input.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from abc import ABC, abstractmethod
from pathlib import Path

from torchshield.atomic import fsync_dir
from torchshield.errors import InputError, MissingDependencyError

__all__ = ["FsspecTarget", "LocalTarget", "Target", "crash_point", "open_target", "storage_error"]

_CRASH_ENV = "TORCHSHIELD_STORE_CRASH_AT"
_crash_counts: dict[str, int] = {}


def crash_point(stage: str) -> None:
    """Test hook: die like kill -9 at a named stage (``TORCHSHIELD_STORE_CRASH_AT=<stage>``).

    ``<stage>:<n>`` dies the n-th time the stage is reached. No cleanup runs (``os._exit``).
    Stages: ``before-rename-<folder>`` (a temporary file is complete, not yet renamed; folder is
    data, snapshots, config...), ``chunk-written``, ``before-commit``, ``committed``,
    ``backup-chunk``, ``rotate-snapshot``."""
    want = os.environ.get(_CRASH_ENV)
    if not want:
        return
    name, _, nth = want.partition(":")
    if name != stage:
        return
    _crash_counts[stage] = _crash_counts.get(stage, 0) + 1
    if _crash_counts[stage] >= int(nth or 1):
        os._exit(137)

# Test hook: TORCHSHIELD_STORE_FSIZE_LIMIT=<bytes> makes local writes fail with ENOSPC once a
# file would grow past that size, so "disk full mid-write" is testable without a tiny disk.
_FSIZE_LIMIT_ENV = "TORCHSHIELD_STORE_FSIZE_LIMIT"


def storage_error(exc: OSError, where: str) -> InputError:
    """Turn an OS error while writing into a one-line error that says nothing was committed."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file size limit reached",
              errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
              errno.EROFS: "read-only file system"}.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return InputError(f"could not write {where}: {reason}; the vault still holds its previous state",
                      hint="free space or fix permissions, then run the command again")


class Target(ABC):
    """A folder of files addressed by relative ``/`` paths."""

    url: str

    @abstractmethod
    def read(self, rel: str) -> bytes: ...

    @abstractmethod
    def write_atomic(self, rel: str, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def create_exclusive(self, rel: str, data: bytes) -> bool: ...

    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) in folder ``rel``; empty if it does not exist."""

    @abstractmethod
    def delete(self, rel: str) -> None: ...

    @abstractmethod
    def size(self, rel: str) -> int: ...

    @abstractmethod
    def makedirs(self, rel: str) -> None: ...

    def sync_dirs(self, rels: set[str]) -> None:  # noqa: B027 - only local folders need it
        """Make renames inside these folders durable (no-op where the storage has no such notion)."""


class LocalTarget(Target):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _p(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> bytes:
        return self._p(rel).read_bytes()

    def write_atomic(self, rel: str, data: bytes | memoryview) -> None:
        final = self._p(rel)
        tmp = final.with_name(f".tmp-{final.name}-{secrets.token_hex(4)}")
        limit = os.environ.get(_FSIZE_LIMIT_ENV)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if limit is not None and len(data) > int(limit):
                    os.write(fd, bytes(memoryview(data)[: int(limit)]))
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            crash_point("before-rename-" + rel.partition("/")[0])
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise storage_error(exc, str(final)) from None

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        # write a complete temporary file, then link(2) it: the link fails if the name exists,
        # and a reader never sees a lock file without its content
        final = self._p(rel)
        tmp = final.with_name(f".tmp-{final.name}")
        self.write_atomic(str(tmp.relative_to(self.root)), data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def exists(self, rel: str) -> bool:
        return self._p(rel).exists()

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(self._p(rel))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._p(rel))

    def size(self, rel: str) -> int:
        return self._p(rel).stat().st_size

    def makedirs(self, rel: str) -> None:
        try:
            self._p(rel).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, str(self._p(rel))) from None

    def sync_dirs(self, rels: set[str]) -> None:
        for rel in sorted(rels):
            fsync_dir(self._p(rel))


class FsspecTarget(Target):
    """Any fsspec filesystem. Atomicity is what the backend's ``mv`` gives (a rename on
    local/memory filesystems; a copy-then-delete on object stores, where a reader can never
    see a partial object anyway because uploads are all-or-nothing)."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise MissingDependencyError("fsspec", "store") from None
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")

    def _p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def read(self, rel: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._p(rel)))
        except FileNotFoundError:
            raise FileNotFoundError(self._p(rel)) from None

    def write_atomic(self, rel: str, data: bytes | memoryview) -> None:
        final = self._p(rel)
        head, _, name = final.rpartition("/")
        tmp = f"{head}/.tmp-{name}-{secrets.token_hex(4)}"
        try:
            with self.fs.open(tmp, "wb") as fh:
                fh.write(bytes(data))
            crash_point("before-rename-" + rel.partition("/")[0])
            self.fs.mv(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.fs.rm(tmp)
            raise storage_error(exc, f"{self.url}/{rel}") from None

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        try:
            with self.fs.open(self._p(rel), "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self._p(rel)))

    def listdir(self, rel: str) -> list[str]:
        path = self._p(rel)
        if not self.fs.isdir(path):
            return []
        return [p.rstrip("/").rpartition("/")[2] for p in self.fs.ls(path, detail=False)]

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._p(rel))

    def size(self, rel: str) -> int:
        return int(self.fs.size(self._p(rel)))

    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self._p(rel), exist_ok=True)


def open_target(location: str | os.PathLike[str]) -> Target:
    """A local path (or ``file://`` URL) gives a LocalTarget; any other ``scheme://`` URL goes to fsspec."""
    text = os.fspath(location)
    if text.startswith("file://"):
        return LocalTarget(text[len("file://"):])
    if "://" in text:
        return FsspecTarget(text)
    return LocalTarget(text)
