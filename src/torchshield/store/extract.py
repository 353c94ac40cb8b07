"""``get`` and ``restore``: decrypt a snapshot back into a file, or refuse.

Every chunk is authenticated before its bytes are written, and the output goes to a temporary
file renamed into place only when the whole object checked out: damaged data never reaches the
destination, not even as a partial file. The temporary file is recognisable and locked while
written (``partials``), so a later ``get`` or ``restore`` into the same folder removes what a
killed one left behind, and never a concurrent one's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from torchshield.errors import InputError
from torchshield.partials import partial_output, sweep_partials
from torchshield.store.objects import ChunkProblem, open_chunk
from torchshield.store.repository import Repository, chunk_rel
from torchshield.store.snapshots import Snapshot, load_snapshots, resolve_snapshot, validate_name

__all__ = ["get_object", "iter_plaintext", "restore"]


def iter_plaintext(repo: Repository, snap: Snapshot) -> Iterator[bytes]:
    """The object's bytes, chunk by chunk, each one authenticated; ChunkProblem on damage."""
    keys = repo.require_keys()
    for cid_hex, length in snap.chunks:
        cid = bytes.fromhex(cid_hex)
        try:
            blob = repo.target.read(chunk_rel(cid_hex))
        except FileNotFoundError:
            raise ChunkProblem("missing", cid, f"its file is gone (object {snap.name!r}, "
                                               f"snapshot {snap.short_id})") from None
        plain = open_chunk(keys, cid, blob)
        if len(plain) != length:
            raise ChunkProblem("damaged", cid, f"{len(plain)} bytes where snapshot {snap.short_id} says {length}")
        yield plain


def get_object(repo: Repository, snap: Snapshot, out: str | os.PathLike[str], *, overwrite: bool = False,
               sweep: bool = True) -> Path:
    """Write snapshot ``snap`` to ``out`` (mode 0600). First removes the partial files that killed
    gets left in ``out``'s folder (``sweep=False``: the caller has just done so)."""
    dest = Path(out)
    if sweep:
        sweep_partials(dest.parent)
    with repo.lock(exclusive=False), partial_output(dest, overwrite=overwrite) as fh:
        for plain in iter_plaintext(repo, snap):
            fh.write(plain)
    return dest


def restore(repo: Repository, ref: str, to_dir: str | os.PathLike[str], *,
            overwrite: bool = False, sweep: bool = True) -> list[tuple[Snapshot, Path]]:
    """Restore one snapshot (id or prefix), or with ``ref="latest"`` the newest version of every
    object, into ``to_dir/<object name>``, after removing killed gets' partial files there."""
    root = Path(to_dir)
    root.mkdir(parents=True, exist_ok=True)
    if sweep:
        sweep_partials(root)
    if ref == "latest":
        latest: dict[str, Snapshot] = {}
        for snap in load_snapshots(repo):
            latest[snap.name] = snap
        snaps = sorted(latest.values(), key=lambda s: s.name)
    else:
        snaps = [resolve_snapshot(repo, ref)]
    done = []
    for snap in snaps:
        dest = root / validate_name(snap.name)
        if dest.resolve().parent != root.resolve():
            raise InputError(f"object name {snap.name!r} would leave {root}")
        done.append((snap, get_object(repo, snap, dest, overwrite=overwrite, sweep=False)))
    return done
