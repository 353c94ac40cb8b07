"""Foundation benchmarks: streaming encryption vs the raw AES-GCM floor, and bundle loads vs
torch.load(weights_only=True), all measured interleaved in one process (ratios, medians).

    .venv/bin/python benchmarks/bench_bundle.py [--mb 400] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import blake3
import torch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import torchshield
from torchshield.crypto.keys import generate_master_key
from torchshield.crypto.signing import generate_signing_key
from torchshield.crypto.stream import StreamCipher, StreamWriter

MiB = 1 << 20


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for name in names:  # warm-up
        fns[name]()
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_stream(size_mb: int, rounds: int) -> None:
    data = os.urandom(size_mb * MiB)
    key = os.urandom(32)
    cs = MiB
    n = len(data) // cs
    raw = AESGCM(key)
    out = bytearray(len(data) + 16 * n)
    back = bytearray(len(data))
    src = memoryview(data)
    ov, bv = memoryview(out), memoryview(back)

    def raw_encrypt() -> None:
        for i in range(n):
            raw.encrypt_into(i.to_bytes(12, "big"), src[i * cs:(i + 1) * cs], None, ov[i * (cs + 16):(i + 1) * (cs + 16)])

    raw_encrypt()
    raw_ct = bytes(out)

    def raw_decrypt() -> None:
        for i in range(n):
            raw.decrypt_into(i.to_bytes(12, "big"), raw_ct[i * (cs + 16):(i + 1) * (cs + 16)], None, bv[i * cs:(i + 1) * cs])

    cipher = StreamCipher(key, salt=os.urandom(16), context_digest=os.urandom(32))

    class Sink:
        def __init__(self) -> None:
            self.pos = 0

        def write(self, b) -> None:  # noqa: ANN001
            ov[self.pos:self.pos + len(b)] = b
            self.pos += len(b)

    def ours_encrypt() -> None:
        w = StreamWriter(Sink(), cipher, chunk_size=cs)
        w.write(src)
        w.close()

    class NullSink:
        """Keeps nothing: separates the writer's own cost from the sink's copy of every chunk,
        which a stream writer cannot avoid and the floor (encrypting in place) does not pay."""

        def write(self, b) -> None:  # noqa: ANN001
            pass

    def ours_encrypt_nullsink() -> None:
        w = StreamWriter(NullSink(), cipher, chunk_size=cs)
        w.write(src)
        w.close()

    ours_encrypt()
    ours_ct = bytes(out[: len(data) + 16 * n])

    def ours_decrypt() -> None:
        for i in range(n):
            cipher.open_into(i, i == n - 1, ours_ct[i * (cs + 16):(i + 1) * (cs + 16)], bv[i * cs:(i + 1) * cs])

    med = interleaved({"raw_encrypt": raw_encrypt, "ours_encrypt": ours_encrypt,
                       "ours_encrypt_nullsink": ours_encrypt_nullsink, "raw_decrypt": raw_decrypt,
                       "ours_decrypt": ours_decrypt}, rounds)
    gbs = {k: len(data) / v / 1e9 for k, v in med.items()}
    print(f"\n## streaming AEAD, {size_mb} MiB in 1 MiB chunks, one core, median of {rounds}")
    for k in med:
        print(f"  {k:22s} {med[k] * 1e3:8.1f} ms  {gbs[k]:6.2f} GB/s")
    print(f"  RATIO encrypt ours/floor throughput: {gbs['ours_encrypt'] / gbs['raw_encrypt']:.2f}x (goal >= 0.8x)")
    print(f"  RATIO encrypt ours (sink keeps nothing)/floor: {gbs['ours_encrypt_nullsink'] / gbs['raw_encrypt']:.2f}x"
          " (the rest is the sink's copy)")
    print(f"  RATIO decrypt ours/floor throughput: {gbs['ours_decrypt'] / gbs['raw_decrypt']:.2f}x (goal >= 0.8x)")

    def sha() -> None:
        hashlib.sha256(src).digest()

    def b3() -> None:
        blake3.blake3(src).digest()

    def b3mt() -> None:
        blake3.blake3(src, max_threads=blake3.blake3.AUTO).digest()

    med = interleaved({"sha256": sha, "blake3": b3, "blake3_mt": b3mt}, rounds)
    print(f"\n## hashing {size_mb} MiB (what a signature over the data costs)")
    for k, v in med.items():
        print(f"  {k:10s} {len(data) / v / 1e9:6.2f} GB/s")


def bench_load(size_mb: int, rounds: int) -> None:
    torch.set_num_threads(1)
    side = 4096
    n_layers = max(1, round(size_mb * MiB / (side * side * 4)))
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(n_layers):
        sd[f"l{i}.weight"] = torch.randn(side, side, generator=g)
        sd[f"l{i}.bias"] = torch.randn(side, generator=g)
    total = sum(t.numel() * 4 for t in sd.values())
    tmp = Path(tempfile.mkdtemp(prefix="tsbench-"))
    key = generate_master_key()
    sk, pk = generate_signing_key(tmp / "signer")
    torch.save(sd, tmp / "m.pt")
    torchshield.save(sd, tmp / "plain.tsb")
    torchshield.save(sd, tmp / "enc.tsb", key=key)
    torchshield.save(sd, tmp / "encsig.tsb", key=key, sign_with=sk)
    del sd
    for p in tmp.iterdir():  # warm the page cache
        p.read_bytes()

    def touch(tensors: dict) -> None:
        for t in tensors.values():
            flat = t.reshape(-1)
            flat[:: 1024].sum()  # one read per 4 KiB page: fault in lazily mapped tensors

    from torchshield.model.bundle import _read_layout

    lay = _read_layout(tmp / "enc.tsb")
    n_plain = int(lay.manifest["data_length"])
    ck = 64 * MiB
    floor_key = os.urandom(32)
    floor_aead = AESGCM(floor_key)
    # The reference's encrypted floor (L7): 64 MiB chunks, decrypt_into one fresh buffer.
    plain_bytes = (tmp / "m.pt").read_bytes()[: n_plain]
    chunks = [floor_aead.encrypt(i.to_bytes(12, "big"), plain_bytes[o:o + ck], None)
              for i, o in enumerate(range(0, len(plain_bytes), ck))]
    with open(tmp / "floor.enc", "wb") as fh:
        for c in chunks:
            fh.write(c)
    del plain_bytes, chunks
    (tmp / "floor.enc").read_bytes()

    def floor_plain() -> None:
        buf = torch.empty(os.path.getsize(tmp / "m.pt"), dtype=torch.uint8)
        with open(tmp / "m.pt", "rb", buffering=0) as fh:
            fh.readinto(memoryview(buf.numpy()))
        buf[:: 4096].sum()

    def floor_encrypted() -> None:
        buf = torch.empty(n_plain, dtype=torch.uint8)
        out = memoryview(buf.numpy())
        ct = memoryview(bytearray(ck + 16))
        with open(tmp / "floor.enc", "rb", buffering=0) as fh:
            for i, o in enumerate(range(0, n_plain, ck)):
                m = min(ck, n_plain - o)
                fh.readinto(ct[: m + 16])
                floor_aead.decrypt_into(i.to_bytes(12, "big"), ct[: m + 16], None, out[o:o + m])
        buf[:: 4096].sum()

    fns = {
        "torch.load": lambda: touch(torch.load(tmp / "m.pt", weights_only=True)),
        "floor: readinto fresh buf": floor_plain,
        "floor: decrypt_into fresh": floor_encrypted,
        "tsb plain (mmap+verify)": lambda: touch(torchshield.load(tmp / "plain.tsb")),
        "tsb encrypted": lambda: touch(torchshield.load(tmp / "enc.tsb", key=key)),
        "tsb encrypted+signed": lambda: touch(torchshield.load(tmp / "encsig.tsb", key=key, verify_with=pk)),
    }
    med = interleaved(fns, rounds)
    ref = med["torch.load"]
    print(f"\n## load {total / 1e6:.0f} MB state dict ({n_layers} x Linear {side}x{side}), warm cache, "
          f"torch threads 1, median of {rounds}")
    for k, v in med.items():
        print(f"  {k:26s} {v * 1e3:8.1f} ms  {total / v / 1e9:6.2f} GB/s  RATIO vs torch.load {v / ref:.2f}x")
    print(f"  RATIO tsb encrypted vs encrypted floor: {med['tsb encrypted'] / med['floor: decrypt_into fresh']:.2f}x")
    print("  goals: encrypted <= 1.3x, encrypted+signed <= 1.6x")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=400, help="model size for the load benchmark")
    ap.add_argument("--stream-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cores {os.cpu_count()}")
    bench_stream(a.stream_mb, a.rounds)
    bench_load(a.mb, a.rounds)


if __name__ == "__main__":
    main()
