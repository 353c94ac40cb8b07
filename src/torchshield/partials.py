"""Partial outputs of decryption (``store get``/``restore``, ``keys decrypt``): decrypted plaintext
under a temporary name, and the sweep that removes the ones whose writer died.

Why. ``get`` (like ``keys decrypt``) writes authenticated plaintext into a temporary file (mode 0600) next to the output
and renames it into place only when the whole object checked out. A ``get`` killed with SIGKILL
(or by a power cut) cannot clean up: it leaves partly decrypted plaintext beside the output that
nothing refers to. So these files are recognisable by name,
``.torchshield-partial.<output name>.<16 hex>.partial``, and every live writer holds an exclusive
``flock`` on its file from before its first byte until after the rename. The kernel drops the
lock when its process dies, however it dies, so an unlocked partial file is a dead writer's
leftover. Each ``get``/``restore`` sweeps the unlocked partial files of its output folder; a
concurrent ``get``'s file is locked and never removed.

Two races, both closed:

* the writer creates its file, then locks it; a sweeper could lock and delete it in between.
  After locking, the writer checks that its path still names the file it holds (same device and
  inode) and otherwise starts again under a new name;
* the sweeper deletes only while it holds the lock itself, and only if the path still names the
  inode it locked (the writer may have renamed it into place in the meantime).

The sweep touches only regular files of this user whose whole name matches the pattern; it
never follows a symlink and never blocks on a FIFO. ``flock`` is advisory and local: on a network
file system without lock support a partial file may look unlocked, so do not point two hosts'
``get`` at one shared output folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from torchshield.atomic import check_target, commit
from torchshield.errors import InputError

__all__ = ["PARTIAL_PREFIX", "PARTIAL_SUFFIX", "is_partial_name", "partial_output", "sweep_partials"]

PARTIAL_PREFIX = ".torchshield-partial."
PARTIAL_SUFFIX = ".partial"
_NAME_RE = re.compile(r"\.torchshield-partial\..+\.[0-9a-f]{16}\.partial", re.DOTALL)
_STEM_MAX = 96  # keeps prefix + stem + random part + suffix under the usual 255-byte name limit
_ATTEMPTS = 32


def is_partial_name(name: str) -> bool:
    """True for a name that ``partial_output`` makes (and only the sweep may remove)."""
    return _NAME_RE.fullmatch(name) is not None


def _lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX)


def _same_file(path: Path, fd: int) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _create_locked(folder: Path, name: str) -> tuple[int, Path]:
    stem = name.encode("utf-8", "surrogateescape")[:_STEM_MAX].decode("utf-8", "ignore") or "out"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_ATTEMPTS):
        tmp = folder / f"{PARTIAL_PREFIX}{stem}.{secrets.token_hex(8)}{PARTIAL_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:
            continue
        try:
            _lock(fd)  # blocks only while a sweeper looks at this very file (an instant)
            if _same_file(tmp, fd):
                return fd, tmp
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a sweeper removed it between our create and our lock: take a new name
    raise InputError(f"could not create a temporary file in {folder}",
                     hint="check the folder's permissions and free space")


@contextlib.contextmanager
def partial_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file (mode 0600) that replaces ``path`` on success and vanishes on error.

    Like ``torchshield.atomic.atomic_output``, but the temporary file has a recognisable name and stays
    ``flock``-ed by this process until it is renamed or removed, so that ``sweep_partials`` can tell
    a live writer's file from a killed one's. With ``overwrite=False`` an existing ``path`` is
    refused, checked again at the final link so that two writers cannot both win."""
    target, parent = check_target(path, overwrite=overwrite, hint="choose another path or pass --force")
    fd, tmp = _create_locked(parent, target.name)
    try:
        # A second descriptor for the writing: the lock belongs to the open file description
        # and stays held through ``fd`` until the file is renamed (or removed) below.
        with os.fdopen(os.dup(fd), "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        commit(tmp, target, overwrite=overwrite, hint="choose another path or pass --force")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # releases the lock, after the file left its temporary name


def sweep_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the partial files in ``folder`` whose writer is gone (no lock held); return them.

    Never raises for a file it cannot examine: that file is left alone."""
    root = Path(folder) if str(folder) else Path(".")
    try:
        names = os.listdir(root)
    except OSError:
        return []
    removed: list[Path] = []
    for name in sorted(names):
        if not is_partial_name(name):
            continue
        path = root / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, a symlink, or not ours to read
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                continue
            # EWOULDBLOCK: a live writer holds it; another error (no lock support): leave it too
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(path, fd):
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed
