"""Every kind of damage is found by verify (with object and version) and refused by get."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_fixtures import make_vault, random_bytes

from torchshield import store
from torchshield.cli.app import run
from torchshield.errors import IntegrityError
from torchshield.store.repository import chunk_rel


@pytest.fixture
def filled(tmp_path: Path, master_key):  # type: ignore[no-untyped-def]
    repo = make_vault(tmp_path / "vault", master_key)
    src = tmp_path / "src"
    src.write_bytes(random_bytes(120_000, 11))
    snap = store.put_file(repo, src, name="weights", tag="v1").snapshot
    return repo, snap, tmp_path


def _chunk_path(tmp_path: Path, cid: str) -> Path:
    return tmp_path / "vault" / chunk_rel(cid)


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def _damage(kind: str, tmp_path: Path, snap) -> str:  # type: ignore[no-untyped-def]
    first, second = snap.chunks[3][0], snap.chunks[7][0]
    path = _chunk_path(tmp_path, first)
    if kind == "changed":
        _flip(path, 200)
    elif kind == "header":
        _flip(path, 40)  # inside the nonce
    elif kind == "missing":
        path.unlink()
    elif kind == "swapped":
        path.write_bytes(_chunk_path(tmp_path, second).read_bytes())
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "extended":
        path.write_bytes(path.read_bytes() + b"\0")
    return first


EXPECTED = {"changed": "damaged", "header": "damaged", "missing": "missing", "swapped": "swapped",
            "truncated": "truncated", "extended": "damaged"}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_chunk_damage_is_found_and_refused(filled, kind):  # type: ignore[no-untyped-def]
    repo, snap, tmp_path = filled
    cid = _damage(kind, tmp_path, snap)
    report = store.verify(repo)
    assert not report.ok
    [problem] = report.problems
    assert problem.kind == EXPECTED[kind] and problem.chunk == cid
    assert problem.objects == [{"name": "weights", "snapshot": snap.id, "tag": "v1"}]
    out = tmp_path / "out.bin"
    with pytest.raises(IntegrityError):
        store.get_object(repo, snap, out)
    assert not out.exists() and not list(tmp_path.glob(".out.bin*"))


def test_tampered_or_moved_manifest_is_reported(filled, master_key):  # type: ignore[no-untyped-def]
    repo, snap, tmp_path = filled
    other = store.put_file(repo, tmp_path / "src", name="copy").snapshot
    snaps = tmp_path / "vault" / "snapshots"
    _flip(snaps / snap.id, 120)
    # a valid manifest renamed to another snapshot's name does not open either (id is bound)
    (snaps / ("0" * 32)).write_bytes((snaps / other.id).read_bytes())
    report = store.verify(repo)
    kinds = sorted((p.kind, p.objects[0]["snapshot"]) for p in report.problems)
    assert kinds == sorted([("snapshot", snap.id), ("snapshot", "0" * 32)])
    with pytest.raises(IntegrityError):
        store.load_snapshots(repo)


def test_sampled_verify_reads_a_subset_but_checks_presence(filled):  # type: ignore[no-untyped-def]
    repo, snap, tmp_path = filled
    n = len({c for c, _ in snap.chunks})
    assert store.verify(repo, sample=3).chunks_read == 3
    assert store.verify(repo, sample=0.5).chunks_read == round(n * 0.5)
    _chunk_path(tmp_path, snap.chunks[0][0]).unlink()
    report = store.verify(repo, sample=1)
    assert [p.kind for p in report.problems if p.kind == "missing"] == ["missing"]


def test_cli_verify_exit_codes_and_json(filled, tmp_path, capsys, master_key):  # type: ignore[no-untyped-def]
    from torchshield.crypto.keys import write_key_file

    repo, snap, tmp = filled
    kf = tmp / "k.key"
    write_key_file(kf, master_key)
    vault = str(tmp / "vault")
    assert run(["store", "verify", vault, "-k", str(kf), "--json"]) == 0
    _damage("changed", tmp, snap)
    capsys.readouterr()
    assert run(["store", "verify", vault, "-k", str(kf), "--json"]) == 1
    assert '"kind": "damaged"' in capsys.readouterr().out
    assert run(["store", "get", vault, "weights", "-o", str(tmp / "o"), "-k", str(kf)]) == 1
    assert "damaged" in capsys.readouterr().err and not (tmp / "o").exists()
    assert run(["store", "verify", vault, "-k", str(kf), "--sample", "abc"]) == 2
