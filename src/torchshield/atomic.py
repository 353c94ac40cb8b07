"""Crash-safe file writes: write a temporary file beside the target, fsync, rename.

A reader never sees a half-written file, and a failed write leaves the old file (or none)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from torchshield.errors import InputError

__all__ = ["atomic_output", "atomic_write_bytes", "check_target", "commit", "fsync_dir"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int = 0o644,
                  overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file; on success it replaces ``path`` atomically, on error it vanishes.

    With ``overwrite=False`` an existing ``path`` is refused (checked again at the final link,
    so two writers cannot both win)."""
    target, parent = check_target(path, overwrite=overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        commit(tmp, target, overwrite=overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_target(path: str | os.PathLike[str], *, overwrite: bool,
                 hint: str = "choose another path or remove it first") -> tuple[Path, Path]:
    """The output path and its folder, refused (InputError) before any byte is written when the path
    is a directory, exists without ``overwrite``, or lies in a folder that does not exist."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"output {target} is a directory", hint="give a file path")
    if not overwrite and target.exists():
        raise InputError(f"{target} already exists", hint=hint)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist", hint="create it first")
    return target, parent


def commit(tmp: str | os.PathLike[str], target: Path, *, overwrite: bool,
           hint: str = "choose another path or remove it first") -> None:
    """Move a finished temporary file onto ``target`` and make the rename durable. Without
    ``overwrite`` the final link fails if ``target`` appeared meanwhile, so two writers cannot both win."""
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise InputError(f"{target} already exists", hint=hint) from None
        os.unlink(tmp)
    fsync_dir(target.parent if str(target.parent) else Path("."))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    with atomic_output(path, mode=mode, overwrite=overwrite) as fh:
        fh.write(data)
