"""A short flag means one thing across the whole CLI (``-p`` is always ``--pubkey``, ...)."""

from __future__ import annotations

from collections import defaultdict

import click
import typer

from torchshield.cli.app import build_app


def _commands(group: click.Command, path: str = "torchshield"):
    yield path, group
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_each_short_flag_has_one_meaning():
    root = typer.main.get_command(build_app())
    meanings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, command in _commands(root):
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            longs = sorted(o for o in param.opts + param.secondary_opts if o.startswith("--"))
            for short in (o for o in param.opts + param.secondary_opts if not o.startswith("--")):
                meanings[short][",".join(longs)].append(path)
    clashes = {short: dict(by_long) for short, by_long in meanings.items() if len(by_long) > 1}
    assert not clashes, f"short flags with several meanings: {clashes}"
    assert len(meanings) >= 5  # the walk reached the commands


def test_a_write_the_system_refuses_is_a_one_line_error_not_an_internal_error(tmp_path):
    """Audit: 'File too large' while writing was reported as an internal error (exit 70). The system
    refusing a write (file size limit here, or a full disk) is exit 2 with the reason and the file."""
    import subprocess
    import sys

    (tmp_path / "big.bin").write_bytes(b"x" * 100_000)
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000)); "
              "from torchshield.cli.app import run; sys.exit(run(sys.argv[1:]))")
    subprocess.run([sys.executable, "-m", "torchshield.cli.app", "keys", "init", "--out", str(tmp_path / "k.key")],
                   check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-c", script, "keys", "encrypt", str(tmp_path / "big.bin"),
                           "--out", str(tmp_path / "big.enc"), "--key-file", str(tmp_path / "k.key")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "File too large" in done.stderr and "internal error" not in done.stderr
    assert not (tmp_path / "big.enc").exists()
