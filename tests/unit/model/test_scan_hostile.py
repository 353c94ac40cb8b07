"""Hostile input ends in bounded time and memory with a clear finding, and nothing is imported."""

from __future__ import annotations

import io
import struct
import sys
import time
import zipfile
from pathlib import Path

import pytest
import scan_corpus as corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchshield.model.scan import Limits, scan


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_scanning_never_imports_the_named_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = tmp_path / "imported.txt"
    (tmp_path / "ts_canary_mod.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\ndef go(x): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write(tmp_path, "m.pkl", corpus.reduce_payload("ts_canary_mod", "go"))
    report = scan(path)
    assert not canary.exists() and "ts_canary_mod" not in sys.modules
    assert {f.callable for f in report.findings} == {"ts_canary_mod.go"}
    assert report.findings[0].severity == "high"  # unknown, not known-dangerous


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.pt", b"", "empty file"),
        ("image.pt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "PNG"),
        ("text.bin", b"hello world, this is not a model\n" * 10, "not a recognised"),
        ("truncated.zip", corpus.torch_zip(b"\x80\x02}.")[:60], "truncated or corrupt"),
    ],
    ids=["empty", "png", "text", "truncated-zip"],
)
def test_unreadable_inputs(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    report = scan(_write(tmp_path, name, data))
    assert report.files[0].status == "unreadable" and report.exit_code == 2
    assert reason in (report.files[0].unreadable_reason or "")


def test_missing_and_empty_directory(tmp_path: Path) -> None:
    report = scan([tmp_path / "nope.pt", tmp_path])
    assert [f.unreadable_reason for f in report.files] == [
        "no such file",
        "empty directory: no files to scan",
    ]
    assert report.exit_code == 2


def test_unsafe_wins_over_unreadable(tmp_path: Path) -> None:
    bad = _write(tmp_path, "bad.pkl", corpus.reduce_payload("os", "system"))
    assert scan([tmp_path / "missing.pt", bad]).exit_code == 1


def test_truncated_pickle_reports_payload_and_truncation(tmp_path: Path) -> None:
    data = corpus.reduce_payload("os", "system")[:-1]  # payload complete, STOP missing
    file = scan(_write(tmp_path, "t.pkl", data)).files[0]
    assert file.status == "unsafe" and any(f.callable == "os.system" for f in file.findings)
    assert any("before its STOP" in f.message for f in file.findings)
    benign = scan(_write(tmp_path, "b.pkl", b"\x80\x02}q\x00(X\x01\x00\x00\x00a")).files[0]
    assert benign.status == "unreadable"


@pytest.mark.parametrize("op", [b"\x8d", b"\x8e", b"\x96", b"X", b"B", b"T", b"\x8b"])
def test_absurd_length_fields_never_allocate(tmp_path: Path, op: bytes) -> None:
    width = 8 if op in (b"\x8d", b"\x8e", b"\x96") else 4
    data = b"\x80\x04" + op + (b"\xff" * (width - 1) + b"\x7f") + b"x" * 16
    file = scan(_write(tmp_path, "big.pkl", data)).files[0]
    assert file.status == "unreadable"
    assert any("length field" in f.message for f in file.findings)


def test_deep_nesting_has_no_recursion(tmp_path: Path) -> None:
    depth = 50_000
    data = b"\x80\x02" + b"(" * depth + b"l" * depth + b"."
    start = time.perf_counter()
    file = scan(_write(tmp_path, "deep.pkl", data)).files[0]
    assert file.status == "safe" and time.perf_counter() - start < 10


def test_nested_zips_stop_at_depth_limit(tmp_path: Path) -> None:
    data = corpus.torch_zip(corpus.reduce_payload("os", "system"))
    for i in range(8):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(f"layer{i}.zip", data)
        data = buf.getvalue()
    file = scan(_write(tmp_path, "deep.zip", data), limits=Limits(max_depth=4)).files[0]
    assert file.status == "unsafe"
    assert any(f.kind == "limit" and "nested more than 4" in f.message for f in file.findings)


def test_zip_bomb_is_capped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"(" * (16 << 20))
    path = _write(tmp_path, "bomb.pt", buf.getvalue())
    start = time.perf_counter()
    file = scan(path, limits=Limits(max_bytes=2 << 20)).files[0]
    assert time.perf_counter() - start < 10
    assert file.status == "unsafe" and file.bytes_scanned <= (2 << 20) + 1
    messages = " ".join(f.message for f in file.findings)
    assert "per-file cap" in messages


def test_lying_declared_size_is_reported(tmp_path: Path) -> None:
    data = bytearray(corpus.torch_zip(corpus.reduce_payload("os", "system"), deflate=True))
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 10)  # central directory: uncompressed size 10
    file = scan(_write(tmp_path, "lie.pt", bytes(data))).files[0]
    assert any("declares 10 bytes but decompresses" in f.message for f in file.findings)
    assert any(f.callable == "os.system" for f in file.findings)


def test_member_count_is_capped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(300):
            z.writestr(f"m{i}.txt", b"x")
    file = scan(_write(tmp_path, "many.zip", buf.getvalue()), limits=Limits(max_members=100)).files[0]
    assert any(f.kind == "limit" and "over the cap of 100" in f.message for f in file.findings)
    assert file.status == "unsafe"


def test_overlapping_members_are_flagged(tmp_path: Path) -> None:
    data = bytearray(corpus.torch_zip(b"\x80\x02}.", extra={"archive/x.pkl": b"\x80\x02}."}))
    cds = [i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)]
    struct.pack_into("<I", data, cds[-1] + 42, 0)  # last member points at the first local header
    file = scan(_write(tmp_path, "overlap.pt", bytes(data))).files[0]
    assert any("overlap" in f.message for f in file.findings)


def test_expansion_pickle_is_fast_and_flagged(tmp_path: Path) -> None:
    body = b"]q\x00" + (b"(" + b"h\x00" * 1000 + b"l" + b"q\x00") * 120
    start = time.perf_counter()
    file = scan(_write(tmp_path, "laughs.pkl", corpus.p2(body))).files[0]
    assert time.perf_counter() - start < 10
    assert any("billion laughs" in f.message for f in file.findings)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes_never_raise(tmp_path: Path, data: bytes) -> None:
    file = scan(_write(tmp_path, "fuzz.bin", data)).files[0]
    assert file.status in ("safe", "unsafe", "unreadable")


_SEED_FILES = [
    corpus.torch_zip(corpus.reduce_payload("os", "system", proto=4)),
    corpus.legacy(),
    corpus.npy_object(corpus.reduce_payload("os", "system")),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.integers(0, len(_SEED_FILES) - 1),
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=4),
)
def test_fuzz_mutated_files_never_raise(
    tmp_path: Path, which: int, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(_SEED_FILES[which])
    for pos, xor in flips:
        if pos < len(data):
            data[pos] ^= xor
    data = data[: max(1, len(data) - cut)] if cut % 3 == 0 else data
    file = scan(_write(tmp_path, "mut.pt", bytes(data))).files[0]
    assert file.status in ("safe", "unsafe", "unreadable")


def test_reader_bug_is_never_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchshield.model.scan import formats

    def broken(self: object, blob: object) -> str:
        raise ValueError("reader bug")

    monkeypatch.setattr(formats._Scanner, "scan_zip", broken)
    file = scan(_write(tmp_path, "m.pt", corpus.torch_zip(corpus.p2(b"}")))).files[0]
    assert file.status == "unsafe" and "could not finish" in file.findings[0].message
