"""Crash safety for real: child processes killed (os._exit at named stages, and SIGKILL at random
moments) during put, backup and key rotation; a full disk; concurrent writers and locks."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_fixtures import child, make_vault, put_code, random_bytes

from torchshield import store
from torchshield.crypto.keys import generate_master_key
from torchshield.errors import InputError, WrongKeyError
from torchshield.store import Repository, VaultLocked

BASE = random_bytes(40_000, 1)
NEW = random_bytes(300_000, 2)


@pytest.fixture
def setup(tmp_path: Path, master_key):  # type: ignore[no-untyped-def]
    repo = make_vault(tmp_path / "vault", master_key)
    (tmp_path / "base").write_bytes(BASE)
    (tmp_path / "new").write_bytes(NEW)
    base = store.put_file(repo, tmp_path / "base", name="base").snapshot
    return repo, base, tmp_path


def _assert_previous_state_intact(repo: Repository, base, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    snaps = store.load_snapshots(repo)
    report = store.verify(repo)
    assert report.ok, report.problems
    if len(snaps) == 2:  # the put committed: then the new version must be complete
        new = next(s for s in snaps if s.name == "new")
        store.get_object(repo, new, tmp_path / "got-new", overwrite=True)
        assert (tmp_path / "got-new").read_bytes() == NEW
    else:
        assert [s.id for s in snaps] == [base.id]
    store.get_object(repo, base, tmp_path / "got-base", overwrite=True)
    assert (tmp_path / "got-base").read_bytes() == BASE


@pytest.mark.parametrize("stage", ["chunk-written:1", "chunk-written:12", "before-rename-data:5", "before-commit",
                                   "before-rename-snapshots", "committed"])
def test_put_killed_at_each_stage_leaves_previous_state(setup, master_key, stage):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    code, _, err = child(put_code(tmp_path / "vault", master_key, tmp_path / "new", "new"),
                         env={"TORCHSHIELD_STORE_CRASH_AT": stage})
    assert code == 137, err
    _assert_previous_state_intact(repo, base, tmp_path)
    committed = len(store.load_snapshots(repo)) == 2
    assert committed == (stage == "committed")
    store.prune(repo)  # collects the dead writer's chunks, temporaries and its (stale) lock
    assert not [p for p in (tmp_path / "vault").rglob(".tmp-*")]
    assert os.listdir(tmp_path / "vault" / "locks") == []
    again = store.put_file(repo, tmp_path / "new", name="new2").snapshot
    store.get_object(repo, again, tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == NEW


def _kill_when_running(proc: subprocess.Popen, rng: random.Random, max_delay: float) -> None:  # type: ignore[type-arg]
    assert proc.stdout is not None
    proc.stdout.readline()  # "go": imports done, work starts now
    time.sleep(rng.uniform(0.0, max_delay))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_put_sigkilled_at_a_random_moment(setup, master_key, seed):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    code = "print('go', flush=True)\n" + put_code(tmp_path / "vault", master_key, tmp_path / "new", "new")
    proc = child(code, wait=False)
    _kill_when_running(proc, random.Random(seed), 0.15)
    _assert_previous_state_intact(repo, base, tmp_path)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_backup_sigkilled_at_a_random_moment_then_completed(setup, master_key, seed):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    target = tmp_path / "backup"
    store.backup(tmp_path / "vault", target)
    store.put_file(repo, tmp_path / "new", name="new")
    proc = child(f"print('go', flush=True)\nstore.backup({str(tmp_path / 'vault')!r}, {str(target)!r})\n",
                 wait=False)
    _kill_when_running(proc, random.Random(seed), 0.1)
    backup_repo = Repository.open(target, master_key)
    assert store.verify(backup_repo).ok
    assert base.id in {s.id for s in store.load_snapshots(backup_repo)}
    store.backup(tmp_path / "vault", target)
    assert len(store.load_snapshots(backup_repo)) == 2
    _assert_previous_state_intact(backup_repo, base, tmp_path)


@pytest.mark.parametrize("stage", ["backup-chunk:3", "before-rename-snapshots"])
def test_backup_killed_at_a_stage(setup, master_key, stage):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    target = tmp_path / "backup"
    store.backup(tmp_path / "vault", target)
    store.put_file(repo, tmp_path / "new", name="new")
    code, _, err = child(f"store.backup({str(tmp_path / 'vault')!r}, {str(target)!r})\n",
                         env={"TORCHSHIELD_STORE_CRASH_AT": stage})
    assert code == 137, err
    backup_repo = Repository.open(target, master_key)
    assert [s.id for s in store.load_snapshots(backup_repo)] == [base.id]
    assert store.verify(backup_repo).ok


def test_rotation_killed_midway_resumes(setup, master_key):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    store.put_file(repo, tmp_path / "new", name="new")
    new = generate_master_key()
    code, _, err = child(f"store.rotate_master_key({str(tmp_path / 'vault')!r}, "
                         f"MasterKey(bytes.fromhex({master_key.secret.hex()!r})), "
                         f"MasterKey(bytes.fromhex({new.secret.hex()!r})))\n",
                         env={"TORCHSHIELD_STORE_CRASH_AT": "rotate-snapshot:1"})
    assert code == 137, err
    mid = Repository.open(tmp_path / "vault", new)  # both key slots exist mid-rotation
    assert [p.kind for p in store.verify(mid).problems] == ["snapshot"]
    assert store.rotate_master_key(str(tmp_path / "vault"), master_key, new) == 1
    assert store.verify(Repository.open(tmp_path / "vault", new)).ok
    with pytest.raises(WrongKeyError):
        Repository.open(tmp_path / "vault", master_key)


def test_disk_full_mid_write_is_a_clear_error(setup, monkeypatch):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    monkeypatch.setenv("TORCHSHIELD_STORE_FSIZE_LIMIT", "5000")
    with pytest.raises(InputError, match="no space left.*previous state"):
        store.put_file(repo, tmp_path / "new", name="new")
    monkeypatch.delenv("TORCHSHIELD_STORE_FSIZE_LIMIT")
    _assert_previous_state_intact(repo, base, tmp_path)
    assert not list((tmp_path / "vault").rglob(".tmp-*"))


def test_real_file_size_limit_in_a_child(setup, master_key):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup

    def limit() -> None:
        # Chunks here are 2-32 KiB at random boundaries (the chunker seed is random per vault); a
        # 4 KiB limit is below almost every chunk of the 300 KB file, so the put must hit it.
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    code = ("from torchshield.errors import ShieldError\ntry:\n"
            + "".join("    " + line + "\n" for line in put_code(tmp_path / "vault", master_key,
                                                                tmp_path / "new", "new").splitlines())
            + "except ShieldError as exc:\n    print(exc)\n    sys.exit(exc.exit_code)\n")
    proc = subprocess.run([sys.executable, "-c", "import sys\nfrom torchshield import store\n"
                           "from torchshield.crypto.keys import MasterKey\n" + code],
                          preexec_fn=limit, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "file size limit" in proc.stdout
    _assert_previous_state_intact(repo, base, tmp_path)


def test_concurrent_writers_both_commit(setup, master_key):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    other = random_bytes(200_000, 3) + NEW[:100_000]  # shares chunks with NEW
    (tmp_path / "other").write_bytes(other)
    procs = [child(put_code(tmp_path / "vault", master_key, tmp_path / src, src), wait=False)
             for src in ("new", "other")]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    assert store.verify(repo).ok
    for name, data in (("new", NEW), ("other", other)):
        store.get_object(repo, store.resolve_snapshot(repo, "latest", name=name), tmp_path / f"o-{name}")
        assert (tmp_path / f"o-{name}").read_bytes() == data


def _write_lock(tmp_path: Path, name: str, info: dict) -> None:  # type: ignore[type-arg]
    (tmp_path / "vault" / "locks" / name).write_text(json.dumps(info))


def test_locks_exclude_prune_while_writing_and_stale_locks_are_removed(setup):  # type: ignore[no-untyped-def]
    repo, base, tmp_path = setup
    with repo.lock(exclusive=False), pytest.raises(VaultLocked, match="locked"):
        store.prune(repo)
    with repo.lock(exclusive=True), pytest.raises(VaultLocked):
        store.put_file(repo, tmp_path / "new", name="new")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    _write_lock(tmp_path, "exclusive-dead", {"kind": "exclusive", "host": host, "pid": int(dead.stdout),
                                             "time": time.time()})
    _write_lock(tmp_path, "exclusive-old", {"kind": "exclusive", "host": "elsewhere", "pid": 1,
                                            "time": time.time() - 7200})
    store.put_file(repo, tmp_path / "new", name="new")  # both stale locks are ignored and removed
    assert os.listdir(tmp_path / "vault" / "locks") == []
    _write_lock(tmp_path, "exclusive-live", {"kind": "exclusive", "host": "elsewhere", "pid": 1, "time": time.time()})
    with pytest.raises(VaultLocked, match="elsewhere"):
        store.put_file(repo, tmp_path / "new", name="new")
