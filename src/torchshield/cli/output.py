"""How every command reports: human tables on the terminal, one JSON document with --json,
progress on stderr, errors as one line. Commands never print secrets."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from torchshield.jsonable import to_jsonable

__all__ = ["JSON_OPTION", "STATE", "check_bundle_output", "console", "emit", "err_console", "fail", "progress",
           "to_jsonable"]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout instead of text.")


@dataclass
class _State:
    debug: bool = False
    quiet: bool = False


STATE = _State()


def emit(data: Any, human: Callable[[Console], None] | None = None, *, as_json: bool) -> None:
    """Print a command's result: ``data`` as JSON, or ``human(console)`` as text."""
    if as_json:
        sys.stdout.write(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif human is not None:
        human(console)
    else:
        console.print_json(json.dumps(to_jsonable(data), ensure_ascii=False))


def fail(code: int) -> None:
    """End the command with ``code`` after its report was printed (1: a check found a problem)."""
    raise typer.Exit(code)


@contextmanager
def progress(description: str, total: float | None = None, *, unit: str = "") -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr for work longer than a second; yields ``advance(n)``.

    Hidden when stderr is not a terminal or --quiet is set, so JSON output and logs stay clean."""
    enabled = err_console.is_terminal and not STATE.quiet
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn() if unit == "" else
               TextColumn("{task.completed:.0f}/{task.total:.0f} " + unit), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=True, disable=not enabled) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: float = 1) -> None:
            bar.advance(task, n)

        yield advance


def check_bundle_output(out: Path, force: bool, sign: Path | None) -> Any:
    """For a command that writes a bundle: refuse, before any work, an ``out`` that cannot be
    written (exists without --force, is a folder, lies in a missing folder) or a signing key that
    does not load; returns the loaded key (or None). Found at the save, either cost the whole run."""
    from torchshield.atomic import check_target
    from torchshield.crypto.signing import load_signing_key

    check_target(out, overwrite=force, hint="pass --force to overwrite it")
    return None if sign is None else load_signing_key(sign)
