"""Readers for every container a model file comes in, each bounded in time and memory.

Threat model: the file is hostile. Nothing here allocates from a length field (every length is
compared with the bytes really present first), decompression is capped per file
(``Limits.max_bytes``) and per ratio, members and nesting are counted, and nothing recurses:
nested containers (a zip in a zip, a pickle inside ``pickle.loads(b"...")``) go on a work queue.

The zip reader is our own rather than :mod:`zipfile` on purpose: ``torch.load`` reads zips with
miniz, which ignores CRCs, the encryption and "patched data" flag bits, and local header names.
Python's ``zipfile`` refuses such files, so a scanner built on it reports an error (or nothing)
while torch happily loads the payload. We read the bytes the way torch does and report each
disagreement as a finding.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import importlib.util
import io
import itertools
import json
import lzma
import mmap
import os
import re
import stat
import struct
import tarfile
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchshield.model.scan.allowlist import CRITICAL, HIGH, Allowlist
from torchshield.model.scan.keras import config_findings, read_h5_config
from torchshield.model.scan.pickle_ops import (
    LEGACY_MAGIC,
    MAX_EXPANDED,
    MEDIUM,
    PickleWalk,
    Ref,
    looks_like_pickle,
    walk_pickle,
)
from torchshield.model.scan.report import FileReport, Finding

__all__ = ["IS_A_DIRECTORY", "NOT_REGULAR", "Limits", "open_regular", "scan_file"]


@dataclass(frozen=True)
class Limits:
    """Caps that keep hostile input bounded. Exceeding one is itself a finding."""

    max_bytes: int = 2 << 30  # bytes decompressed or parsed per file
    max_members: int = 200_000  # zip / tar members per container
    max_depth: int = 4  # containers inside containers
    max_ratio: int = 1000  # deflate cannot exceed ~1032:1; more means a lie or a bomb
    max_pickles: int = 10_000  # pickles concatenated in one stream
    max_header: int = 100 << 20  # safetensors header, as the safetensors library caps it
    max_expanded: int = MAX_EXPANDED  # nodes of a loaded object once materialised (billion laughs)


_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_EOCD = b"PK\x05\x06"
_EOCD = struct.Struct("<4s4H2LH")
_CDH = struct.Struct("<4s6H3L5H2L")
_LFH = struct.Struct("<4s5H3L2H")
_Z64_LOC = struct.Struct("<4sLQL")
_Z64_EOCD = struct.Struct("<4sQ2H2L4Q")
_NPY_MAGIC = b"\x93NUMPY"
_TSB_MAGIC = b"\x89TSB\r\n\x1a\n"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SKIP_MEMBER = re.compile(
    r"(^|/)(data/\d+|\.data/.*|version|byteorder|\.format_version|\.storage_alignment)$"
)
_TORCHSCRIPT_CODE = re.compile(r"(^|/)code/.+\.py$")
_STORAGE_BYTES = {
    "Float": 4,
    "Double": 8,
    "Half": 2,
    "BFloat16": 2,
    "Long": 8,
    "Int": 4,
    "Short": 2,
    "Char": 1,
    "Byte": 1,
    "Bool": 1,
    "ComplexFloat": 8,
    "ComplexDouble": 16,
    "QInt8": 1,
    "QUInt8": 1,
    "QInt32": 4,
    "QUInt4x2": 1,
    "QUInt2x4": 1,
    "Untyped": 1,
    "Typed": 1,
}
_ST_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "C64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}
_PEEK = 4096
_CHUNK = 1 << 20


@dataclass
class _Blob:
    """A byte range to scan: ``data[lo:hi]`` with ``data`` bytes, bytearray or mmap."""

    data: Any
    lo: int
    hi: int
    member: str | None
    depth: int


@dataclass
class _ZipEntry:
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    local: int


class _Scanner:
    def __init__(self, report: FileReport, allow: Allowlist, limits: Limits, path: Path) -> None:
        self.report = report
        self.allow = allow
        self.limits = limits
        self.path = path
        self.budget = limits.max_bytes
        self.queue: deque[_Blob] = deque()
        self.budget_reported = False

    # -- findings -------------------------------------------------------------------
    def add(
        self,
        severity: str,
        kind: str,
        message: str,
        member: str | None = None,
        offset: int | None = None,
        callable: str | None = None,
    ) -> None:
        self.report.findings.append(
            Finding(self.report.path, severity, kind, message, member, offset, callable)
        )

    def spend(self, n: int, member: str | None) -> bool:
        """Charge ``n`` bytes to the per-file budget; False (and one finding) once it is spent."""
        if n <= self.budget:
            self.budget -= n
            self.report.bytes_scanned += n
            return True
        if not self.budget_reported:
            self.budget_reported = True
            self.add(
                HIGH,
                "limit",
                f"stopped after {self.limits.max_bytes} bytes of decompressed content "
                "(per-file cap): a decompression bomb, or a file larger than the cap allows",
                member,
            )
        return False

    # -- dispatch -------------------------------------------------------------------
    def run(self, data: Any) -> None:
        self.queue.append(_Blob(data, 0, len(data), None, 0))
        first = True
        while self.queue:
            blob = self.queue.popleft()
            fmt = self.scan_blob(blob)
            if first:
                self.report.format = fmt or "unknown"
                if fmt is None:
                    self.report.unreadable_reason = _unknown_reason(data)
                first = False

    def nested(self, blob: _Blob) -> None:
        if blob.depth > self.limits.max_depth:
            self.add(
                HIGH,
                "limit",
                f"containers nested more than {self.limits.max_depth} deep: not scanned further",
                blob.member,
            )
            return
        self.queue.append(blob)

    def scan_blob(self, b: _Blob) -> str | None:
        head = bytes(b.data[b.lo : min(b.hi, b.lo + 512)])
        if head.startswith((_ZIP_LOCAL, _ZIP_EOCD)):
            return self.scan_zip(b)
        if head.startswith(_NPY_MAGIC):
            return self.scan_npy(b)
        if head.startswith(_TSB_MAGIC):
            return self.scan_tsb(b)
        if head.startswith(_HDF5_MAGIC):
            return self.scan_hdf5(b)
        if _is_safetensors(head, b.hi - b.lo):
            return self.scan_safetensors(b)
        if len(head) >= 262 and head[257:262] == b"ustar":
            return self.scan_tar(b)
        for magic, name, opener in (
            (b"\x1f\x8b", "gzip", gzip.GzipFile),
            (b"BZh", "bzip2", bz2.BZ2File),
            (b"\xfd7zXZ\x00", "xz", lzma.LZMAFile),
        ):
            if head.startswith(magic):
                return self.scan_compressed(b, name, opener)
        for magic, name in ((b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!\x1a\x07", "rar")):
            if head.startswith(magic):
                self.add(
                    HIGH,
                    "unscannable",
                    f"{name} archive: its contents cannot be scanned here; extract them "
                    "and scan the files inside (never treat it as clean)",
                    b.member,
                )
                return name
        if looks_like_pickle(head):
            fmt = self.scan_pickle_stream(b, probe=False)
            if fmt is not None:
                self.check_polyglot(b)
                return fmt
        if self.find_eocd(b) is not None:
            self.add(
                MEDIUM,
                "structure",
                "data before the zip archive (self-extracting or polyglot layout)",
                b.member,
            )
            return self.scan_zip(b)
        return None

    # -- pickle streams -----------------------------------------------------------------
    def scan_pickle_stream(
        self, b: _Blob, *, probe: bool, collect: list[PickleWalk] | None = None
    ) -> str | None:
        """Scan concatenated pickles; torch's legacy format is five pickles then raw storage bytes."""
        pos, count, legacy = b.lo, 0, False
        while pos < b.hi:
            if count >= self.limits.max_pickles:
                self.add(
                    HIGH,
                    "limit",
                    f"more than {self.limits.max_pickles} pickles in one stream: rest not scanned",
                    b.member,
                    pos - b.lo,
                )
                break
            walk = walk_pickle(b.data, pos, b.hi, self.allow, max_expanded=self.limits.max_expanded)
            if (
                count == 0
                and not walk.complete
                and not walk.imports_anything
                and (probe or b.data[b.lo] != 0x80)
            ):
                return None  # not a pickle at all: garbage or another format
            if count > 0 and not walk.complete and not walk.imports_anything:
                self.add(
                    MEDIUM,
                    "structure",
                    f"{b.hi - pos} bytes of non-pickle data after the pickle that ends "
                    f"at offset {pos - b.lo} (ignored by pickle.load; read by some loaders)",
                    b.member,
                    pos - b.lo,
                )
                break
            if probe and not walk.complete:
                return None
            self.record_walk(walk, b)
            if collect is not None:
                collect.append(walk)
            count += 1
            if count == 1 and walk.root == LEGACY_MAGIC:
                legacy = True
            pos = walk.end
            if not walk.complete:
                break
            if legacy and count == 5:
                break  # the rest is raw storage data (8-byte element count, then the bytes)
        self.report.pickles += count
        return "torch-legacy" if legacy else "pickle"

    def record_walk(self, walk: PickleWalk, b: _Blob, *, follow: bool = True) -> None:
        self.report.imports += len(walk.refs)
        base = b.lo
        for ref in walk.refs:
            if ref.verdict.severity is None:
                continue
            how = (
                f"; called by {', '.join(ref.calls[:3])}"
                if ref.calls
                else "; imported (importing runs module code)"
            )
            self.add(
                ref.verdict.severity,
                "import",
                f"{ref.verdict.reason}{how}",
                b.member,
                ref.offset - base,
                ref.full,
            )
        for f in walk.findings:
            self.add(f.severity, f.kind, f.message, b.member, f.offset - base, f.callable)
        for start in walk.resync[:16] if follow else ():  # the other reading of a straddled FRAME
            self.record_walk(
                walk_pickle(b.data, start, b.hi, self.allow, max_expanded=self.limits.max_expanded),
                b,
                follow=False,
            )
        for offset, loader, blob in walk.nested:
            label = _join(b.member, f"<{loader} argument at offset {offset - base}>")
            # the bytes literal lives inside this stream: scan it in place, no copy
            self.nested(_Blob(b.data, blob.offset, blob.offset + len(blob.view), label, b.depth + 1))

    def check_polyglot(self, b: _Blob) -> None:
        if b.depth == 0 and self.find_eocd(b) is not None:
            self.add(
                HIGH,
                "structure",
                "file is both a pickle and a zip archive (polyglot): loaders that pick "
                "a different reading run different content; both were scanned",
                b.member,
            )
            self.scan_zip(b)

    # -- zip --------------------------------------------------------------------------------
    def find_eocd(self, b: _Blob) -> int | None:
        at = b.data.rfind(_ZIP_EOCD, max(b.lo, b.hi - 65557), b.hi)
        if at < 0 or at + _EOCD.size > b.hi:
            return None
        return at

    def scan_zip(self, b: _Blob) -> str | None:
        entries = self.zip_entries(b)
        if entries is None:
            if b.depth == 0:
                self.report.unreadable_reason = (
                    "zip archive is truncated or corrupt (no end-of-central-directory)"
                )
                return "zip"
            self.add(HIGH, "unscannable", "nested zip archive is truncated or corrupt: not scanned", b.member)
            return "zip"
        names = {e.name for e in entries}
        fmt = "zip"
        if any(n.endswith("data.pkl") for n in names):
            fmt = "torch-zip"
        elif names and all(n.endswith(".npy") for n in names):
            fmt = "npz"
        code = [n for n in names if _TORCHSCRIPT_CODE.search(n)]
        if code:
            fmt = "torchscript"
            if not self.allow.allowed_by_user("torch.jit.load"):
                self.add(
                    HIGH,
                    "torchscript",
                    f"TorchScript archive with {len(code)} code file(s): torch.jit.load "
                    "compiles and runs them; review the code or pass --allow torch.jit.load",
                    _join(b.member, min(code)),
                    callable="torch.jit.load",
                )
        record_sizes: dict[str, int] = {}
        storages: list[tuple[str, tuple[Any, ...]]] = []
        self.check_overlaps(entries, b)
        for entry in entries:
            member = _join(b.member, entry.name)
            if _SKIP_MEMBER.search(entry.name):
                # central flags only: the local header of a tensor record is never read (its page
                # would be touched for nothing), and a password-aware reader decides by the central flag
                self.check_encrypted(entry.flags, member)
                record_sizes[entry.name] = entry.usize
                continue
            start = self.member_start(entry, b, member)
            if start is None:
                continue
            peek = self.member_peek(entry, b, start)
            if not _worth_reading(entry.name, peek, entry.usize, names):
                continue  # tensor bytes, text, weights in another format: nothing a loader unpickles
            if peek.startswith(_NPY_MAGIC) and not _npy_needs_payload(peek):
                self.report.members_scanned += 1
                self.scan_npy(_Blob(peek, 0, len(peek), member, b.depth + 1))
                continue
            got = self.read_member(entry, b, start, member)
            if got is None:
                continue
            data, lo, hi = got
            self.report.members_scanned += 1
            sub = _Blob(data, lo, hi, member, b.depth + 1)
            head = bytes(data[lo : min(hi, lo + 512)])
            if entry.name.endswith(".pkl") or looks_like_pickle(head):
                named_pickle = entry.name.endswith(".pkl") or head[:1] == b"\x80"
                walks = self.pickle_member(sub, probe=not named_pickle, storages=storages, prefix=entry.name)
                if walks is None and named_pickle:
                    self.add(HIGH, "unscannable", "pickle member could not be parsed", member)
            elif entry.name == "config.json" and "metadata.json" in names:
                fmt = "keras"
                self.scan_keras_config(sub)
            elif _is_container(head, hi - lo):
                self.nested(sub)
        self.check_storages(storages, record_sizes, b)
        return fmt

    def pickle_member(
        self, sub: _Blob, *, probe: bool, storages: list[tuple[str, tuple[Any, ...]]], prefix: str
    ) -> str | None:
        walks: list[PickleWalk] = []
        fmt = self.scan_pickle_stream(sub, probe=probe, collect=walks)
        root = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        for walk in walks:
            storages.extend((root, pid) for pid in walk.persistent_ids)
        return fmt

    def scan_keras_config(self, b: _Blob) -> None:
        """Keras v3 archives: the model config (see ``keras.config_findings``)."""
        try:
            doc = json.loads(bytes(b.data[b.lo : b.hi]).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self.add(HIGH, "unscannable", "Keras config.json is not valid JSON", b.member)
            return
        self.keras_findings(doc, b.member)

    def keras_findings(self, doc: Any, member: str | None) -> None:
        for severity, message, name in config_findings(doc, self.allow):
            self.add(severity, "import", message, member, callable=name)

    def scan_hdf5(self, b: _Blob) -> str:
        """HDF5 (Keras .h5): the root ``model_config``/``training_config`` attributes, read by h5py
        in a child process; a file without them holds data only (weights)."""
        whole = b.depth == 0 and isinstance(b.data, mmap.mmap) and b.lo == 0 and b.hi == len(b.data)
        if not whole and not self.spend(b.hi - b.lo, b.member):
            return "hdf5"
        got = read_h5_config(self.path if whole else bytes(b.data[b.lo : b.hi]))
        problem = None
        if got.missing_h5py:
            problem = (
                "an HDF5 file (Keras .h5): install the keras extra (pip install 'torchshield[keras]', "
                "which brings h5py) to scan it"
            )
        elif got.malformed is not None:
            problem = f"malformed HDF5 file: {got.malformed}"
        if problem is not None:
            if b.depth == 0:
                self.report.unreadable_reason = problem
            else:
                self.add(HIGH, "unscannable", f"{problem}: not scanned", b.member)
            return "hdf5"
        if got.failed is not None:
            self.add(HIGH, "unscannable", f"{got.failed}; treat the file as unsafe", b.member)
            return "hdf5"
        for key, text in got.attrs.items():
            if not text:
                continue
            where = _join(b.member, f"<HDF5 attribute {key}>")
            try:
                doc = json.loads(text)
            except (ValueError, RecursionError):
                self.add(HIGH, "unscannable", f"HDF5 attribute {key} is not valid JSON", where)
                continue
            self.keras_findings(doc, where)
        return "keras-h5" if got.attrs.get("model_config") else "hdf5"

    def check_storages(
        self, storages: list[tuple[str, tuple[Any, ...]]], sizes: dict[str, int], b: _Blob
    ) -> None:
        """Each storage a checkpoint declares must fit the bytes of its record (CVE-2026-24747 class)."""
        for root, pid in storages:
            if len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], Ref):
                continue
            key, numel = pid[2], pid[4]
            if not isinstance(key, str) or not isinstance(numel, int):
                continue
            kind = pid[1].full.rsplit(".", 1)[-1].removesuffix("Storage")
            elem = _STORAGE_BYTES.get(kind, 1)
            record = f"{root}/data/{key}" if root else f"data/{key}"
            have = sizes.get(record)
            if have is None:
                self.add(
                    HIGH,
                    "structure",
                    f"storage {key!r} has no record {record!r} in the archive",
                    _join(b.member, record),
                )
            elif numel < 0 or numel * elem > have:
                self.add(
                    HIGH,
                    "structure",
                    f"storage {key!r} declares {numel} elements ({numel * elem} bytes) but "
                    f"its record holds {have} bytes: out-of-bounds read in loaders",
                    _join(b.member, record),
                )

    def check_overlaps(self, entries: list[_ZipEntry], b: _Blob) -> None:
        spans = sorted((e.local, e.local + _LFH.size + e.csize, e.name) for e in entries)
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            if s2 < e1:
                self.add(
                    HIGH,
                    "limit",
                    f"zip members {n1!r} and {n2!r} overlap: an overlapping-entry zip bomb or a parser trick",
                    b.member,
                )
                return

    def zip_entries(self, b: _Blob) -> list[_ZipEntry] | None:
        data = b.data
        at = self.find_eocd(b)
        if at is None:
            return None
        _sig, _d, _cd, _n_this, n_total, cd_size, cd_offset, _clen = _EOCD.unpack_from(data, at)
        loc = at - _Z64_LOC.size  # torch always writes zip64 end records before the classic one
        if loc >= b.lo and bytes(data[loc : loc + 4]) == b"PK\x06\x07":
            z64 = b.lo + _Z64_LOC.unpack_from(data, loc)[2]
            if b.lo <= z64 and z64 + _Z64_EOCD.size <= loc and bytes(data[z64 : z64 + 4]) == b"PK\x06\x06":
                rec = _Z64_EOCD.unpack_from(data, z64)
                n_total, cd_size, cd_offset = rec[7], rec[8], rec[9]
                at = z64
        delta = at - cd_size - cd_offset - b.lo  # bytes prepended to the archive
        delta = max(delta, 0)
        pos = b.lo + cd_offset + delta
        if n_total > self.limits.max_members:
            self.add(
                HIGH,
                "limit",
                f"zip declares {n_total} members, over the cap of {self.limits.max_members}: "
                "only the first ones are scanned",
                b.member,
            )
        entries: list[_ZipEntry] = []
        seen: set[str] = set()
        for _ in range(min(n_total, self.limits.max_members)):
            if pos + _CDH.size > b.hi or bytes(data[pos : pos + 4]) != b"PK\x01\x02":
                self.add(
                    MEDIUM, "structure", "central directory is shorter than the end record says", b.member
                )
                break
            f = _CDH.unpack_from(data, pos)
            flags, method, crc, csize, usize, nlen, elen, clen, local = (
                f[3],
                f[4],
                f[7],
                f[8],
                f[9],
                f[10],
                f[11],
                f[12],
                f[16],
            )
            raw_name = bytes(data[pos + 46 : pos + 46 + nlen])
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
            extra = bytes(data[pos + 46 + nlen : pos + 46 + nlen + elen])
            usize, csize, local = _zip64_sizes(extra, usize, csize, local)
            pos += _CDH.size + nlen + elen + clen
            if name in seen:
                self.add(
                    MEDIUM,
                    "structure",
                    f"duplicate member name {name!r}: readers disagree on which one "
                    "they load; both are scanned",
                    b.member,
                )
            seen.add(name)
            entries.append(_ZipEntry(name, flags, method, crc, csize, usize, b.lo + delta + local))
        return entries

    def member_start(self, e: _ZipEntry, b: _Blob, member: str) -> int | None:
        """Where a member's bytes begin, reporting every header disagreement on the way."""
        data = b.data
        if e.local + _LFH.size > b.hi or bytes(data[e.local : e.local + 4]) != _ZIP_LOCAL:
            self.add(HIGH, "structure", "central directory points at no local header", member)
            return None
        lf = _LFH.unpack_from(data, e.local)
        lname = bytes(data[e.local + 30 : e.local + 30 + lf[9]]).decode(
            "utf-8" if e.flags & 0x800 else "cp437", "replace"
        )
        if lname != e.name:
            self.add(
                MEDIUM,
                "structure",
                f"local header names {lname!r} but the central directory says "
                f"{e.name!r}: Python's zipfile refuses this, torch loads it",
                member,
            )
        self.check_encrypted(e.flags | lf[2], member)
        if (e.flags | lf[2]) & 0x20:
            self.add(
                MEDIUM,
                "structure",
                "zip flag 0x20 (patched data) set: Python's zipfile refuses the member, "
                "torch ignores the flag; content scanned as stored",
                member,
            )
        start = e.local + _LFH.size + lf[9] + lf[10]
        if start + e.csize > b.hi:
            self.add(
                HIGH, "structure", f"member data ({e.csize} bytes) runs past the end of the archive", member
            )
            return None
        if e.method not in (0, 8):
            self.add(
                HIGH,
                "unscannable",
                f"compression method {e.method} is not one torch writes: member not scanned",
                member,
            )
            return None
        if e.method == 8 and e.csize and e.usize / e.csize > self.limits.max_ratio:
            self.add(
                HIGH,
                "limit",
                f"member declares a {e.usize // e.csize}:1 compression ratio (deflate cannot "
                "exceed ~1032:1): decompression bomb or a lying header",
                member,
            )
        return start

    def check_encrypted(self, flags: int, member: str) -> None:
        """An encrypted member (flag 0x1 or 0x40, central or local header) is never clean.

        Its stored bytes are still scanned as torch's reader takes them (it ignores the flag),
        but a loader given the password reads a plaintext no scanner can see."""
        if not flags & 0x41:
            return
        for bit, what in ((0x1, "encrypted"), (0x40, "strong encryption")):
            if flags & bit:
                self.add(
                    HIGH,
                    "unscannable",
                    f"zip flag 0x{bit:x} ({what}): the member's plaintext cannot be scanned; a loader "
                    "given the password reads content no scanner sees (the stored bytes were scanned "
                    "as torch reads them; Python's zipfile refuses the member)",
                    member,
                )
                return

    def member_peek(self, e: _ZipEntry, b: _Blob, start: int) -> bytes:
        """The first bytes of a member, enough to route it, without reading the rest."""
        if e.method == 0:
            return bytes(b.data[start : start + min(e.csize, _PEEK)])
        try:
            return zlib.decompressobj(-15).decompress(
                memoryview(b.data)[start : start + min(e.csize, 1 << 16)], _PEEK
            )
        except zlib.error:
            return b""

    def read_member(self, e: _ZipEntry, b: _Blob, start: int, member: str) -> tuple[Any, int, int] | None:
        data = b.data
        if e.method == 0:
            if e.usize != e.csize:
                self.add(
                    MEDIUM, "structure", f"stored member declares {e.usize} bytes but holds {e.csize}", member
                )
            if not self.spend(e.csize, member):
                return None
            self.check_crc(data[start : start + e.csize], e, member)
            return data, start, start + e.csize
        out = self.inflate(memoryview(data)[start : start + e.csize], e, member)
        if out is None:
            return None
        self.check_crc(out, e, member)
        return out, 0, len(out)

    def inflate(self, comp: memoryview, e: _ZipEntry, member: str) -> bytes | None:
        cap = self.budget
        d = zlib.decompressobj(-15)
        out = bytearray()
        fed = 0
        chunk: bytes | memoryview
        try:
            while True:
                if d.unconsumed_tail:
                    chunk = d.unconsumed_tail
                elif fed < len(comp):
                    chunk = comp[fed : fed + _CHUNK]
                    fed += len(chunk)
                else:
                    break
                out += d.decompress(chunk, cap - len(out) + 1)
                if len(out) > cap or d.eof:
                    break
        except zlib.error:
            self.add(
                MEDIUM,
                "structure",
                "member's deflate data is corrupt: not scanned (torch cannot load it either)",
                member,
            )
            return None
        if not self.spend(min(len(out), cap + 1), member):
            return None
        if len(out) != e.usize:
            self.add(
                HIGH,
                "structure",
                f"member declares {e.usize} bytes but decompresses to {len(out)}: "
                "a lying header (bomb or parser differential)",
                member,
            )
        if e.csize and len(out) / e.csize > self.limits.max_ratio:
            self.add(
                HIGH, "limit", f"member decompresses {len(out) // e.csize}:1 (decompression bomb)", member
            )
        return bytes(out)

    def check_crc(self, content: Any, e: _ZipEntry, member: str) -> None:
        if zlib.crc32(content) != e.crc:
            self.add(
                MEDIUM,
                "structure",
                "CRC-32 mismatch: Python's zipfile refuses the member, torch loads it",
                member,
            )

    # -- other formats ------------------------------------------------------------------
    def scan_npy(self, b: _Blob) -> str:
        data = b.data
        head = bytes(data[b.lo : min(b.hi, b.lo + 12)])
        if len(head) < 10:
            self.add(HIGH, "unscannable", "truncated .npy header", b.member)
            return "npy"
        major = head[6]
        if major == 1:
            hlen, hstart = struct.unpack_from("<H", head, 8)[0], 10
        elif major in (2, 3) and len(head) >= 12:
            hlen, hstart = struct.unpack_from("<I", head, 8)[0], 12
        else:
            self.add(HIGH, "unscannable", f"unknown .npy version {major}", b.member)
            return "npy"
        if hlen > (1 << 20) or b.lo + hstart + hlen > b.hi:
            self.add(
                HIGH,
                "unscannable",
                f".npy header length {hlen} is absurd or past the end of the data",
                b.member,
            )
            return "npy"
        text = bytes(data[b.lo + hstart : b.lo + hstart + hlen]).decode("latin-1")
        try:
            header = ast.literal_eval(text)
            descr = header["descr"]
        except (ValueError, SyntaxError, KeyError, TypeError, RecursionError, MemoryError):
            self.add(HIGH, "unscannable", ".npy header is not a valid literal dict", b.member)
            return "npy"
        if _npy_has_object(descr):
            payload = _Blob(
                data, b.lo + hstart + hlen, b.hi, _join(b.member, "<object array pickle>"), b.depth
            )
            self.add(
                MEDIUM,
                "object-array",
                "object array: numpy.load(allow_pickle=True) unpickles it; the embedded pickle was scanned",
                b.member,
            )
            if self.scan_pickle_stream(payload, probe=False) is None:
                self.add(HIGH, "unscannable", "object array payload is not a readable pickle", b.member)
        return "npy"

    def scan_safetensors(self, b: _Blob) -> str:
        """Validate like the safetensors library: JSON header, dtypes, shapes, contiguous in-bounds offsets."""
        size = b.hi - b.lo
        n = struct.unpack_from("<Q", b.data, b.lo)[0]
        problem = None
        if n > self.limits.max_header:
            problem = f"header length {n} exceeds the {self.limits.max_header}-byte cap"
        elif 8 + n > size:
            problem = f"header length {n} runs past the end of the file ({size} bytes)"
        if problem is None:
            problem = _safetensors_problem(bytes(b.data[b.lo + 8 : b.lo + 8 + n]), size - 8 - n)
        if problem is not None:
            self.add(HIGH, "unreadable", f"malformed safetensors file: {problem}", b.member)
            if b.depth == 0:
                self.report.unreadable_reason = f"malformed safetensors: {problem}"
        return "safetensors"

    def scan_tsb(self, b: _Blob) -> str:
        if b.depth > 0 or importlib.util.find_spec("torchshield.model.bundle") is None:
            self.add("low", "structure", "torchshield bundle: holds no pickle; not inspected here", b.member)
            return "tsb"
        from torchshield.errors import ShieldError
        from torchshield.model import bundle

        try:
            bundle.inspect(self.path)
        except ShieldError as exc:
            self.add(HIGH, "unreadable", f"bundle is damaged: {exc}", b.member)
            self.report.unreadable_reason = f"damaged bundle: {exc.message}"
        return "tsb"

    def scan_tar(self, b: _Blob) -> str:
        data: bytes | mmap.mmap
        if isinstance(b.data, mmap.mmap) and b.lo == 0 and b.hi == len(b.data):
            fileobj: Any = b.data
            data, base = b.data, 0
        else:
            data, base = bytes(b.data[b.lo : b.hi]), 0
            fileobj = io.BytesIO(data)
        count = 0
        try:
            with tarfile.open(fileobj=fileobj, mode="r:") as tar:
                for info in tar:
                    count += 1
                    if count > self.limits.max_members:
                        self.add(
                            HIGH,
                            "limit",
                            f"tar has more than {self.limits.max_members} members: rest not scanned",
                            b.member,
                        )
                        break
                    if not info.isfile() or info.size == 0:
                        continue
                    lo = base + info.offset_data
                    hi = lo + info.size
                    if hi > len(data):
                        self.add(
                            HIGH,
                            "structure",
                            "tar member runs past the end of the archive",
                            _join(b.member, info.name),
                        )
                        break
                    if not self.spend(info.size, b.member):
                        break
                    sub = _Blob(data, lo, hi, _join(b.member, info.name), b.depth + 1)
                    self.report.members_scanned += 1
                    if info.name.rsplit("/", 1)[-1] == "storages":
                        self.scan_legacy_storages(sub)
                    else:
                        self.nested(sub)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            self.add(
                MEDIUM, "structure", f"tar archive is damaged ({exc}): scanned up to the damage", b.member
            )
        return "tar"

    def scan_legacy_storages(self, b: _Blob) -> None:
        """torch 0.1.x tar format: pickle(count), then per storage pickle((key, location, type)) + raw bytes."""
        pos = b.lo
        while pos < b.hi:
            walk = walk_pickle(b.data, pos, b.hi, self.allow, max_expanded=self.limits.max_expanded)
            self.record_walk(walk, b)
            self.report.pickles += 1
            if not walk.complete:
                return
            pos = walk.end
            root = walk.root
            if isinstance(root, tuple) and len(root) == 3 and isinstance(root[2], Ref):
                if pos + 8 > b.hi:
                    return
                numel = struct.unpack_from("<q", b.data, pos)[0]
                kind = root[2].full.rsplit(".", 1)[-1].removesuffix("Storage")
                pos += 8 + max(0, numel) * _STORAGE_BYTES.get(kind, 1)

    def scan_compressed(self, b: _Blob, name: str, opener: Any) -> str:
        src = io.BytesIO(bytes(b.data[b.lo : b.hi]))
        out = bytearray()
        try:
            with opener(src) as f:
                while True:
                    piece = f.read(_CHUNK)
                    if not piece:
                        break
                    out += piece
                    if not self.spend(len(piece), b.member):
                        break
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
            self.add(
                MEDIUM, "structure", f"{name} stream is damaged ({exc}): scanned what decompressed", b.member
            )
        self.nested(_Blob(bytes(out), 0, len(out), _join(b.member, f"<{name} content>"), b.depth + 1))
        return name


def _zip64_sizes(extra: bytes, usize: int, csize: int, local: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4 : i + 4 + size]
        if tag == 0x0001:
            j = 0
            vals = []
            for declared in (usize, csize, local):
                if declared == 0xFFFFFFFF and j + 8 <= len(body):
                    vals.append(struct.unpack_from("<Q", body, j)[0])
                    j += 8
                else:
                    vals.append(declared)
            return vals[0], vals[1], vals[2]
        i += 4 + size
    return usize, csize, local


def _worth_reading(name: str, peek: bytes, size: int, names: set[str]) -> bool:
    return (
        name.endswith(".pkl")
        or not peek
        or looks_like_pickle(peek)
        or _is_container(peek, size)
        or (name == "config.json" and "metadata.json" in names)
    )


def _npy_needs_payload(peek: bytes) -> bool:
    """True unless the peeked .npy header is complete and describes a dtype without objects."""
    if len(peek) < 10:
        return True
    hlen, hstart = (struct.unpack_from("<H", peek, 8)[0], 10) if peek[6] == 1 else (0, 0)
    if hstart == 0 or hstart + hlen > len(peek):
        return True
    try:
        descr = ast.literal_eval(peek[hstart : hstart + hlen].decode("latin-1"))["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, RecursionError, MemoryError):
        return True
    return _npy_has_object(descr)


def _npy_has_object(descr: Any) -> bool:
    import numpy as np

    try:
        return bool(np.dtype(descr).hasobject)
    except (TypeError, ValueError, RecursionError):
        return "O" in repr(descr)


def _safetensors_problem(header: bytes, data_len: int) -> str | None:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate key")
        return dict(pairs)

    try:
        doc = json.loads(header.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"header is not valid JSON ({exc})"
    if not isinstance(doc, dict):
        return "header is not a JSON object"
    spans = []
    for name, info in doc.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                return "__metadata__ must map strings to strings"
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            return f"tensor {name!r} entry needs exactly dtype, shape and data_offsets"
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _ST_DTYPES:
            return f"tensor {name!r} has unknown dtype {dtype!r}"
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            return f"tensor {name!r} shape must be a list of non-negative integers"
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) for o in offs)
            or not 0 <= offs[0] <= offs[1]
        ):
            return f"tensor {name!r} data_offsets must be [begin, end] with 0 <= begin <= end"
        numel = 1
        for d in shape:
            numel *= d
        if numel * _ST_DTYPES[dtype] != offs[1] - offs[0]:
            return (
                f"tensor {name!r} offsets hold {offs[1] - offs[0]} bytes but shape x dtype needs "
                f"{numel * _ST_DTYPES[dtype]}"
            )
        spans.append((offs[0], offs[1], name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            return f"tensor {name!r} starts at {begin}, expected {cursor} (gap or overlap)"
        cursor = end
    if cursor != data_len:
        return f"tensors cover {cursor} bytes but the data section has {data_len}"
    return None


def _is_safetensors(head: bytes, size: int) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack_from("<Q", head)[0] > 0 and size > 8


def _is_container(head: bytes, size: int) -> bool:
    return (
        head.startswith(
            (
                _ZIP_LOCAL,
                _ZIP_EOCD,
                _NPY_MAGIC,
                _TSB_MAGIC,
                b"\x1f\x8b",
                b"BZh",
                b"\xfd7zXZ\x00",
                b"7z\xbc\xaf\x27\x1c",
                b"Rar!\x1a\x07",
            )
        )
        or (len(head) >= 262 and head[257:262] == b"ustar")
        or _is_safetensors(head, size)
    )


def _join(outer: str | None, inner: str) -> str:
    return f"{outer} > {inner}" if outer else inner


def _unknown_reason(data: Any) -> str:
    head = bytes(data[:8])
    if head.startswith(b"\x89PNG"):
        return "a PNG image, not a model file"
    return "not a recognised model file format (pickle, torch zip or legacy, numpy, safetensors, tar, .tsb)"


NOT_REGULAR = "not a regular file (a device, pipe or socket)"
IS_A_DIRECTORY = "is a directory"


def open_regular(path: str | os.PathLike[str]) -> io.BufferedReader | None:
    """Open a regular file for reading, or None: a FIFO or a device must never block the scan
    (opened non-blocking, checked with fstat on the open descriptor, so no swap in between)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def scan_file(path: str | os.PathLike[str], allow: Allowlist, limits: Limits) -> FileReport:
    """Scan one file; never raises for bad input: problems become findings or an unreadable status."""
    p = Path(path)
    report = FileReport(path=str(path))
    try:
        fh = open_regular(p)
        if fh is None:
            report.unreadable_reason = NOT_REGULAR
            return report
        with fh:
            report.size = os.fstat(fh.fileno()).st_size
            if report.size == 0:
                report.unreadable_reason = "empty file"
                return report
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                _Scanner(report, allow, limits, p).run(mm)
            finally:
                try:
                    mm.close()
                except BufferError:  # a view is still alive somewhere; the GC closes it
                    pass
    except FileNotFoundError:
        report.unreadable_reason = "no such file"
    except IsADirectoryError:
        report.unreadable_reason = IS_A_DIRECTORY
    except PermissionError:
        report.unreadable_reason = "permission denied"
    except (ValueError, struct.error, IndexError, KeyError, TypeError, RecursionError, MemoryError) as exc:
        # a reader bug on hostile bytes must never read as "clean": report it and move on
        report.findings.append(
            Finding(
                report.path,
                HIGH,
                "unscannable",
                f"scanner could not finish this file "
                f"({type(exc).__name__}); treat it as unsafe and report the file",
            )
        )
    except OSError as exc:
        report.unreadable_reason = f"cannot read: {exc.strerror or exc}"
    for f in report.findings:
        if f.kind == "unreadable" and report.unreadable_reason is None:
            report.unreadable_reason = f.message
    report.findings.sort(key=lambda f: (_SEVERITY_RANK.get(f.severity, 9), f.member or "", f.offset or 0))
    return report


_SEVERITY_RANK = {CRITICAL: 0, HIGH: 1, MEDIUM: 2, "low": 3}
