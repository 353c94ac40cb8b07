"""Partial files of killed gets are swept; a running get's file never is (issue 23, item 6).

The end-to-end test runs real ``torchshield store get`` processes: one is paused mid-object by a
hook the test injects into its child (it blocks after a few authenticated chunks are written),
then killed with SIGKILL; a second one is paused and kept alive; a third, ordinary ``store get``
into the same folder must remove the dead one's partial plaintext and leave the live one's alone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from store_fixtures import make_vault, random_bytes

from torchshield import partials, store
from torchshield.crypto.keys import MasterKey, write_key_file
from torchshield.errors import InputError
from torchshield.partials import is_partial_name, partial_output, sweep_partials

DATA = random_bytes(400_000, 23)  # ~50 chunks of the test chunker (2-32 KiB)


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_partial_name(p.name))


# --- the temporary file and the sweep, in-process ---------------------------------------------

def test_partial_file_is_recognisable_private_and_gone_after_success(tmp_path: Path) -> None:
    out = tmp_path / "model.bin"
    with partial_output(out) as fh:
        fh.write(b"secret plaintext")
        (tmp,) = _partials(tmp_path)
        assert tmp.name.startswith(".torchshield-partial.model.bin.") and tmp.name.endswith(".partial")
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
        assert sweep_partials(tmp_path) == [] and tmp.exists(), "a live writer's file is locked"
    assert out.read_bytes() == b"secret plaintext" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert _partials(tmp_path) == []


def test_partial_file_vanishes_on_error_and_refuses_an_existing_output(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), partial_output(tmp_path / "a") as fh:
        fh.write(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "b").write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"), partial_output(tmp_path / "b") as fh:
        fh.write(b"new")
    assert (tmp_path / "b").read_bytes() == b"keep" and _partials(tmp_path) == []
    with partial_output(tmp_path / "b", overwrite=True) as fh:
        fh.write(b"new")
    assert (tmp_path / "b").read_bytes() == b"new"


def test_sweep_removes_only_unlocked_files_of_our_pattern(tmp_path: Path) -> None:
    dead = tmp_path / ".torchshield-partial.x.bin.0123456789abcdef.partial"
    dead.write_bytes(b"partly decrypted")
    keep = {
        ".x.bin.abc123.tmp": "atomic_output's temporaries are not ours to judge",
        "x.partial": "a user's file",
        ".torchshield-partial.x.bin.0123456789abcdef.partial.bak": "not the whole name",
        ".torchshield-partial.x.bin.XYZ.partial": "no random part",
    }
    for name in keep:
        (tmp_path / name).write_bytes(b"user data")
    victim = tmp_path / "victim"
    victim.write_bytes(b"must survive")
    (tmp_path / ".torchshield-partial.l.fedcba9876543210.partial").symlink_to(victim)
    (tmp_path / ".torchshield-partial.d.00000000000000ff.partial").mkdir()
    assert sweep_partials(tmp_path) == [dead]
    assert not dead.exists() and victim.read_bytes() == b"must survive"
    assert all((tmp_path / n).exists() for n in keep)
    assert (tmp_path / ".torchshield-partial.d.00000000000000ff.partial").is_dir()
    assert sweep_partials(tmp_path / "missing") == []


def test_a_sweep_between_create_and_lock_makes_the_writer_take_a_new_name(tmp_path: Path,
                                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The race the inode check closes: a sweeper finds the new file before its writer locked it."""
    real_lock, swept = partials._lock, []

    def racing_lock(fd: int) -> None:
        if not swept:
            swept.extend(sweep_partials(tmp_path))  # not locked yet: the sweeper removes it
        real_lock(fd)

    monkeypatch.setattr(partials, "_lock", racing_lock)
    with partial_output(tmp_path / "out") as fh:
        fh.write(b"data")
        (live,) = _partials(tmp_path)
        assert live not in swept and sweep_partials(tmp_path) == []
    assert len(swept) == 1 and (tmp_path / "out").read_bytes() == b"data"


# --- real processes: SIGKILL mid-get, a live concurrent get, the next get sweeps --------------

_PAUSING_GET = """
import sys
import torchshield.store.extract as extract
from torchshield.cli.app import run
real, seen = extract.open_chunk, [0]
def open_chunk(*args, **kwargs):
    seen[0] += 1
    if seen[0] == {pause_at}:
        print("paused", flush=True)
        sys.stdin.readline()  # the test decides: kill us, or let us finish
    return real(*args, **kwargs)
extract.open_chunk = open_chunk
sys.exit(run(sys.argv[1:]))
"""


_CLI = "import sys\nfrom torchshield.cli.app import main\nmain(sys.argv[1:])\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test():  # type: ignore[no-untyped-def]
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _start_paused_get(argv: list[str], pause_at: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_GET.format(pause_at=pause_at), *argv],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    _STARTED.append(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    assert ready, "the child never reached its pause point"
    line = proc.stdout.readline()
    assert line == "paused\n", (line, proc.stderr.read() if proc.stderr else "")
    return proc


@pytest.fixture
def vault(tmp_path: Path, master_key: MasterKey) -> tuple[list[str], Path]:
    key = tmp_path / "shield.key"
    write_key_file(key, master_key)
    repo = make_vault(tmp_path / "vault", master_key)
    (tmp_path / "src").write_bytes(DATA)
    snap = store.put_file(repo, tmp_path / "src", name="model").snapshot
    assert len(snap.chunks) >= 20, "the pause points below sit inside the object"
    out = tmp_path / "out"
    out.mkdir()
    return ["store", "get", str(tmp_path / "vault"), "model", "-k", str(key)], out


def test_a_killed_get_is_swept_by_the_next_and_a_live_get_is_not(vault) -> None:  # type: ignore[no-untyped-def]
    argv, out = vault
    live = _start_paused_get([*argv, "-o", str(out / "b.bin")], pause_at=4)
    (live_tmp,) = _partials(out)
    live_size = live_tmp.stat().st_size
    # a second get starts (and sweeps) while the first one runs, then is killed mid-object
    killed = _start_paused_get([*argv, "-o", str(out / "a.bin")], pause_at=6)
    assert live_tmp.exists() and live_tmp.stat().st_size == live_size, "its sweep spared the live get"
    (leftover,) = [p for p in _partials(out) if p != live_tmp]
    assert leftover.name.startswith(".torchshield-partial.a.bin.")
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o600
    written = leftover.read_bytes()
    assert 0 < len(written) < len(DATA) and DATA.startswith(written), "partly decrypted plaintext"
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert leftover.exists() and not (out / "a.bin").exists(), "SIGKILL leaves the partial file"

    done = _cli(*argv, "-o", str(out / "c.bin"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partials_removed"] == [leftover.name]
    assert (out / "c.bin").read_bytes() == DATA
    assert not leftover.exists(), "the dead get's plaintext is gone"
    assert live_tmp.exists() and live_tmp.stat().st_size == live_size, "the live get's file is untouched"
    again = _cli(*argv, "-o", str(out / "d.bin"))
    assert again.returncode == 0 and "removed" not in again.stdout, again.stdout
    assert live_tmp.exists()
    assert live.stdin is not None
    live.stdin.write("\n")
    live.stdin.flush()
    assert live.wait(timeout=60) == 0, live.stderr.read() if live.stderr else ""
    assert (out / "b.bin").read_bytes() == DATA
    assert _partials(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["b.bin", "c.bin", "d.bin"]


def test_restore_sweeps_its_folder_too(vault, tmp_path: Path, master_key: MasterKey) -> None:  # type: ignore[no-untyped-def]
    argv, out = vault
    killed = _start_paused_get([*argv, "-o", str(out / "model")], pause_at=3)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    (leftover,) = _partials(out)
    repo = store.Repository.open(tmp_path / "vault", master_key)
    [(snap, path)] = store.restore(repo, "latest", out)
    assert path.read_bytes() == DATA and not leftover.exists() and _partials(out) == []


# --- keys decrypt: the same partial files and sweep -------------------------------------------

_PAUSING_DECRYPT = """
import sys
import torchshield.crypto.stream as stream
from torchshield.cli.app import run
real, seen = stream.iter_decrypt, [0]
def iter_decrypt(*args, **kwargs):
    for i, chunk in enumerate(real(*args, **kwargs)):
        if i == 3:
            print("paused", flush=True)
            sys.stdin.readline()
        yield chunk
stream.iter_decrypt = iter_decrypt
sys.exit(run(sys.argv[1:]))
"""


def test_a_killed_keys_decrypt_leaves_a_0600_partial_that_the_next_decrypt_sweeps(tmp_path, master_key):
    from torchshield.crypto.stream import encrypt_file

    key = tmp_path / "shield.key"
    write_key_file(key, master_key)
    plain = os.urandom(64 * 1024)
    (tmp_path / "p.bin").write_bytes(plain)
    encrypt_file(tmp_path / "p.bin", tmp_path / "p.tse", master_key, chunk_size=4096)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["keys", "decrypt", str(tmp_path / "p.tse"), "-o", str(out / "a.bin"), "-k", str(key)]
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_DECRYPT, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    _STARTED.append(proc)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    assert ready and proc.stdout.readline() == "paused\n", proc.stderr.read()
    (leftover,) = _partials(out)
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o600 and leftover.stat().st_size > 0
    proc.kill()
    proc.wait(timeout=30)
    assert leftover.exists() and not (out / "a.bin").exists()
    done = _cli("keys", "decrypt", str(tmp_path / "p.tse"), "-o", str(out / "b.bin"), "-k", str(key))
    assert done.returncode == 0, done.stderr
    assert not leftover.exists() and _partials(out) == []
    assert (out / "b.bin").read_bytes() == plain and stat.S_IMODE((out / "b.bin").stat().st_mode) == 0o600
