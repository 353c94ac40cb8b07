"""Encrypted store throughput against plain copy and the streaming-encryption floor, plus an
incremental backup after a 1 % change. One run, same bytes, same machine.

    .venv/bin/python benchmarks/bench_store.py --size-mb 1024 --repeat 3

Anchors: ``shutil.copyfile`` (what an unencrypted copy costs; with and without fsync, since put
and get return only when their data is on disk), AES-256-GCM ``encrypt_into`` over
the file in 1 MiB chunks (the floor of any encrypting writer in this process: read + encrypt,
no hashing, no chunking, no writes), and ``torchshield.crypto.stream.encrypt_file`` (our own
file-to-file streaming encryption). put = chunk (FastCDC) + HMAC id + AES-GCM + fsync'ed writes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from torchshield import store
from torchshield.crypto.keys import generate_master_key
from torchshield.crypto.stream import encrypt_file
from torchshield.store import Repository

MiB = 1024 * 1024


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 64 * MiB)
            fh.write(os.urandom(n))
            left -= n


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def copy_durable(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def aesgcm_floor(path: Path) -> None:
    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    buf, out = bytearray(MiB), bytearray(MiB + 16)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            aead.encrypt_into(nonce, view[:n], None, memoryview(out)[:n + 16])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary folder)")
    args = ap.parse_args()
    size = args.size_mb * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    key = generate_master_key()
    try:
        src = work / "src.bin"
        make_file(src, size)
        mb = size / MiB

        copy_s = timed(lambda: shutil.copyfile(src, work / "copy.bin"), args.repeat)
        copy_sync_s = timed(lambda: copy_durable(src, work / "copy.bin"), args.repeat)
        floor_s = timed(lambda: aesgcm_floor(src), args.repeat)
        stream_s = timed(lambda: encrypt_file(src, work / "enc.tse", key, overwrite=True), args.repeat)
        os.unlink(work / "copy.bin")
        os.unlink(work / "enc.tse")

        vaults = iter(range(args.repeat))
        last: dict[str, Repository] = {}

        def put() -> None:
            i = next(vaults)
            repo = Repository.init(work / f"vault{i}", key)
            store.put_file(repo, src, name="data")
            last["repo"] = repo

        put_s = timed(put, args.repeat)
        repo = last["repo"]
        snap = store.resolve_snapshot(repo, "latest", name="data")
        get_s = timed(lambda: store.get_object(repo, snap, work / "out.bin", overwrite=True), args.repeat)
        assert (work / "out.bin").stat().st_size == size
        os.unlink(work / "out.bin")

        # incremental backup after changing 1 % of the file in 8 places
        full_t = time.perf_counter()
        full = store.backup(repo.target.url, work / "backup")
        full_s = time.perf_counter() - full_t
        region = size // 800
        with open(src, "r+b") as fh:
            for k in range(8):
                fh.seek((2 * k + 1) * size // 16)
                fh.write(os.urandom(region))
        put_t = time.perf_counter()
        res2 = store.put_file(repo, src, name="data")
        put2_s = time.perf_counter() - put_t
        inc_t = time.perf_counter()
        inc = store.backup(repo.target.url, work / "backup")
        inc_s = time.perf_counter() - inc_t

        print(f"size {mb:.0f} MiB, median of {args.repeat}, python {sys.version.split()[0]}")
        rows = [("plain copy (shutil.copyfile)", copy_s), ("plain copy + fsync", copy_sync_s),
                ("AES-GCM floor (read+encrypt_into, 1 MiB)", floor_s),
                ("crypto.stream.encrypt_file", stream_s), ("store put (fresh vault)", put_s),
                ("store get", get_s)]
        for label, s in rows:
            print(f"{label:44s} {s:7.3f} s  {mb / s:8.0f} MiB/s")
        print(f"put / copy  = {put_s / copy_s:5.2f}x time   put / floor = {put_s / floor_s:5.2f}x time   "
              f"put / stream = {put_s / stream_s:5.2f}x time")
        print(f"put / (copy+fsync) = {put_s / copy_sync_s:5.2f}x time (both durable on return)")
        print(f"get / copy  = {get_s / copy_s:5.2f}x time   get / floor = {get_s / floor_s:5.2f}x time")
        print(f"full backup: {full_s:.3f} s, {full.bytes_copied / MiB:.1f} MiB copied")
        print(f"1% changed: re-put {put2_s:.3f} s ({res2.new_chunks}/{res2.chunks} chunks new); incremental "
              f"backup {inc_s:.3f} s, {inc.bytes_copied / MiB:.1f} MiB copied "
              f"({100 * inc.bytes_copied / full.bytes_copied:.1f} % of the full backup)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
