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
