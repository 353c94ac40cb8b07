"""Round trips, deduplication, versions, incremental backup, restore, prune, key rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from store_fixtures import SMALL, make_vault, random_bytes

from torchshield import store
from torchshield.crypto.keys import generate_master_key
from torchshield.errors import FormatError, InputError, WrongKeyError
from torchshield.store import Repository


@pytest.fixture
def vault(tmp_path: Path, master_key):  # type: ignore[no-untyped-def]
    return make_vault(tmp_path / "vault", master_key)


def _put(repo: Repository, tmp_path: Path, data: bytes, name: str, **kw):  # type: ignore[no-untyped-def]
    src = tmp_path / f"src-{len(list(tmp_path.glob('src-*')))}"
    src.write_bytes(data)
    return store.put_file(repo, src, name=name, **kw)


def _get(repo: Repository, snap, tmp_path: Path) -> bytes:  # type: ignore[no-untyped-def]
    out = tmp_path / f"out-{snap.id}"
    store.get_object(repo, snap, out, overwrite=True)
    return out.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 2047, 8192, 300_000])
def test_round_trip_is_byte_exact(vault, tmp_path, size):  # type: ignore[no-untyped-def]
    data = random_bytes(size, size)
    res = _put(vault, tmp_path, data, "obj")
    assert res.snapshot.size == size
    assert _get(vault, res.snapshot, tmp_path) == data


def test_chunks_deduplicate_across_objects_and_versions(vault, tmp_path):  # type: ignore[no-untyped-def]
    data = random_bytes(400_000, 1)
    first = _put(vault, tmp_path, data, "a")
    assert first.new_chunks == first.chunks > 10
    assert _put(vault, tmp_path, data, "b").new_chunks == 0
    # insert 100 bytes in the middle: content-defined chunking rewrites only nearby chunks
    edited = data[:200_000] + b"x" * 100 + data[200_000:]
    second = _put(vault, tmp_path, edited, "a")
    assert 1 <= second.new_chunks <= 3  # 100 bytes touch one chunk, plus at most two until resync
    assert _get(vault, second.snapshot, tmp_path) == edited
    assert _get(vault, first.snapshot, tmp_path) == data  # older version unchanged


def test_names_tags_and_metadata_never_appear_in_the_vault(vault, tmp_path):  # type: ignore[no-untyped-def]
    data = b"patient-record " * 1000
    _put(vault, tmp_path, data, "secret-dataset-name", tag="release-tag-77", metadata={"owner": "dr-zhang"})
    blob = b"".join(p.read_bytes() for p in (tmp_path / "vault").rglob("*") if p.is_file())
    for needle in (b"secret-dataset-name", b"release-tag-77", b"dr-zhang", b"patient-record"):
        assert needle not in blob


def test_versions_log_and_resolution(vault, tmp_path):  # type: ignore[no-untyped-def]
    r1 = _put(vault, tmp_path, b"one" * 100, "m", tag="v1")
    r2 = _put(vault, tmp_path, b"two" * 100, "m", tag="v2")
    snaps = store.load_snapshots(vault, name="m")
    assert [s.tag for s in snaps] == ["v1", "v2"]
    assert store.resolve_snapshot(vault, "latest", name="m").id == r2.snapshot.id
    assert store.resolve_snapshot(vault, "v1", name="m").id == r1.snapshot.id
    assert store.resolve_snapshot(vault, r1.snapshot.id[:6]).id == r1.snapshot.id
    with pytest.raises(InputError, match="no version or tag"):
        store.resolve_snapshot(vault, "v9", name="m")


@pytest.mark.parametrize("name", ["../x", "a/b", "/etc/passwd", "a\\b", "..", ".", "nul\x00byte", "tab\there",
                                  "", "x" * 201, " lead", "-rf"])
def test_object_names_with_path_tricks_are_refused(vault, tmp_path, name):  # type: ignore[no-untyped-def]
    before = sorted(os.listdir(tmp_path / "vault" / "snapshots"))
    with pytest.raises(InputError):
        _put(vault, tmp_path, b"data", name)
    assert sorted(os.listdir(tmp_path / "vault" / "snapshots")) == before


def test_wrong_key_is_reported_as_such(vault, tmp_path):  # type: ignore[no-untyped-def]
    _put(vault, tmp_path, b"x" * 5000, "a")
    with pytest.raises(WrongKeyError, match="key id"):
        Repository.open(tmp_path / "vault", generate_master_key())


def test_other_format_or_version_is_refused(tmp_path, master_key):  # type: ignore[no-untyped-def]
    make_vault(tmp_path / "v", master_key)
    cfg = (tmp_path / "v" / "config").read_text()
    (tmp_path / "v" / "config").write_text(cfg.replace('"version": 1', '"version": 2'))
    with pytest.raises(FormatError, match="version 2"):
        Repository.open(tmp_path / "v", master_key)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config").write_text('{"format": "restic"}')
    with pytest.raises(FormatError, match="not a torchshield vault"):
        Repository.open(tmp_path / "w", master_key)
    with pytest.raises(InputError, match="no config"):
        Repository.open(tmp_path / "nothing", master_key)
    assert store.is_vault(tmp_path / "v") is False and store.is_vault(tmp_path / "w") is False


def test_incremental_backup_to_memory_and_restore_from_it(vault, tmp_path, master_key):  # type: ignore[no-untyped-def]
    data = random_bytes(500_000, 7)
    _put(vault, tmp_path, data, "ds")
    target = f"memory://bk-{tmp_path.name}"
    first = store.backup(tmp_path / "vault", target)
    assert first.chunks_copied > 10 and first.snapshots_copied == 1
    changed = bytearray(data)
    changed[250_000:255_000] = random_bytes(5000, 8)  # 1 % changed
    second_put = _put(vault, tmp_path, bytes(changed), "ds")
    second = store.backup(tmp_path / "vault", target)
    # The vault's chunker seed is random, so boundaries differ per run: 5,000 changed bytes span at
    # most ceil(5000 / 2048 min chunk) + 1 = 4 chunks, plus one chunk until the boundaries resync.
    assert second.chunks_copied == second_put.new_chunks <= 5
    # at most 5 chunks of at most 32 KiB (+ framing) travel, against ~500 KB for the full backup
    assert second.bytes_copied <= 5 * (32 * 1024 + 256) < first.bytes_copied / 3
    assert store.backup(tmp_path / "vault", target).bytes_copied == 0
    backup_repo = Repository.open(target, master_key)
    assert store.verify(backup_repo).ok
    done = store.restore(backup_repo, "latest", tmp_path / "restored")
    assert (tmp_path / "restored" / "ds").read_bytes() == bytes(changed) and len(done) == 1
    old = store.restore(backup_repo, store.load_snapshots(backup_repo)[0].id, tmp_path / "old")
    assert old[0][1].read_bytes() == data


def test_backup_refuses_a_different_vault(vault, tmp_path, master_key):  # type: ignore[no-untyped-def]
    make_vault(tmp_path / "other", master_key)
    with pytest.raises(InputError, match="another vault"):
        store.backup(tmp_path / "vault", tmp_path / "other")


def test_restore_refuses_to_overwrite(vault, tmp_path):  # type: ignore[no-untyped-def]
    res = _put(vault, tmp_path, b"abc" * 1000, "f")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "f").write_bytes(b"mine")
    with pytest.raises(InputError, match="exists"):
        store.restore(vault, res.snapshot.id, tmp_path / "dst")
    assert (tmp_path / "dst" / "f").read_bytes() == b"mine"


def test_prune_keeps_policy_and_frees_unused_chunks(vault, tmp_path):  # type: ignore[no-untyped-def]
    for i in range(4):
        _put(vault, tmp_path, random_bytes(60_000, 100 + i), "m")
    keep = _put(vault, tmp_path, random_bytes(60_000, 200), "other")
    n_chunks = len(vault.chunk_ids())
    dry = store.prune(vault, keep_last=2, dry_run=True)
    assert len(dry.forgotten) == 2 and len(vault.chunk_ids()) == n_chunks
    rep = store.prune(vault, keep_last=2)
    assert len(rep.forgotten) == 2 and rep.chunks_deleted > 0
    assert len(vault.chunk_ids()) == n_chunks - rep.chunks_deleted
    left = store.load_snapshots(vault)
    assert len(left) == 3 and keep.snapshot.id in {s.id for s in left}
    assert store.verify(vault).ok
    # keep-daily: all versions are from today, so one per object survives
    assert len(store.prune(vault, keep_daily=1).forgotten) == 1


def test_prune_without_policy_only_collects_garbage(vault, tmp_path):  # type: ignore[no-untyped-def]
    res = _put(vault, tmp_path, random_bytes(50_000, 3), "m")
    (tmp_path / "vault" / "snapshots" / res.snapshot.id).unlink()  # as if a put died before commit
    rep = store.prune(vault)
    assert rep.forgotten == [] and rep.chunks_deleted == res.new_chunks
    assert vault.chunk_ids() == set()


def test_key_rotation_rewraps_without_rewriting_chunks(vault, tmp_path, master_key):  # type: ignore[no-untyped-def]
    data = random_bytes(100_000, 5)
    _put(vault, tmp_path, data, "a")
    _put(vault, tmp_path, data[:50_000], "b")
    chunk_files = {p: p.read_bytes() for p in (tmp_path / "vault" / "data").rglob("*") if p.is_file()}
    new = generate_master_key()
    assert store.rotate_master_key(str(tmp_path / "vault"), master_key, new) == 3  # 1 key slot + 2 snapshots
    assert {p: p.read_bytes() for p in chunk_files} == chunk_files
    with pytest.raises(WrongKeyError):
        Repository.open(tmp_path / "vault", master_key)
    repo = Repository.open(tmp_path / "vault", new)
    assert store.verify(repo).ok
    assert _get(repo, store.resolve_snapshot(repo, "latest", name="a"), tmp_path) == data
    assert store.rotate_master_key(str(tmp_path / "vault"), master_key, new) == 0  # idempotent


def test_rotation_with_a_wrong_old_key_changes_nothing(vault, tmp_path):  # type: ignore[no-untyped-def]
    _put(vault, tmp_path, b"x" * 10_000, "a")
    before = (tmp_path / "vault" / "config").read_bytes()
    with pytest.raises(WrongKeyError):
        store.rotate_master_key(str(tmp_path / "vault"), generate_master_key(), generate_master_key())
    assert (tmp_path / "vault" / "config").read_bytes() == before


def test_file_url_and_default_chunker(tmp_path, master_key):  # type: ignore[no-untyped-def]
    repo = Repository.init(f"file://{tmp_path}/v", master_key)
    assert repo.chunker.avg_size == 1024 * 1024 and SMALL.avg_size == 8192
    data = random_bytes(3_000_000, 9)
    res = _put(repo, tmp_path, data, "big")
    assert 1 <= res.chunks <= 12
    assert _get(Repository.open(f"file://{tmp_path}/v", master_key), res.snapshot, tmp_path) == data
