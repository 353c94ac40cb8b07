"""Assembles the `torchshield` CLI: one module per capability group, each exposing
``register(root: typer.Typer)``. Command modules import heavy libraries inside the command
functions, so `torchshield --help` stays fast.

Errors are translated here, once: a ShieldError prints one line ``error: ...`` on stderr
and exits with its ``exit_code`` (2 bad input, 1 check failed, 3 refused by policy);
``--debug`` shows the traceback. An unexpected exception exits 70 (internal error)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
import warnings
from collections.abc import Sequence

import click
import typer
from rich.markup import escape

from torchshield._version import __version__
from torchshield.cli.output import STATE, err_console
from torchshield.errors import ShieldError

__all__ = ["build_app", "main"]

# Group modules in the order `--help` lists them. A module that is not part of this
# installation (a capability not built yet) is skipped rather than failing the CLI.
GROUP_MODULES: tuple[str, ...] = (
    "keys", "model", "data", "train", "robust", "privacy", "fl",
    "serve", "access", "audit", "store", "report", "demo",
)

INTERNAL_ERROR = 70


def _version(value: bool) -> None:
    if value:
        typer.echo(f"torchshield {__version__}")
        raise typer.Exit(0)


def build_app() -> typer.Typer:
    root = typer.Typer(
        name="torchshield",
        help="Protect PyTorch models and the data they learn from.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @root.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit."),
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ) -> None:
        STATE.debug = debug
        STATE.quiet = quiet

    for name in GROUP_MODULES:
        modname = f"torchshield.cli.{name}_cmd"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).register(root)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `torchshield` script; exits the process with the command's code."""
    sys.exit(run(argv))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", markup=True, highlight=False, soft_wrap=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting (used by tests)."""
    warnings.showwarning = _show_warning
    app = build_app()
    try:
        rv = app(args=list(argv) if argv is not None else None, standalone_mode=False,
                 prog_name="torchshield")
        return rv if isinstance(rv, int) else 0
    except ShieldError as exc:
        if STATE.debug:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.exceptions.ClickException as exc:  # usage errors: bad option, missing argument
        exc.show(file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # the system refused a read or write (disk full, file too large, read-only): not a bug
        if STATE.debug:
            traceback.print_exc()
        where = f" ({exc.filename})" if exc.filename else ""
        err_console.print(f"[bold red]error:[/] {escape(exc.strerror or str(exc))}{escape(where)} (check the path, its "
                          "permissions and the free space)", highlight=False, markup=True, soft_wrap=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into a clean exit
        if STATE.debug:
            traceback.print_exc()
        err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
                          "(please report it; rerun with --debug for the traceback)", markup=True,
                          highlight=False, soft_wrap=True)
        return INTERNAL_ERROR


if __name__ == "__main__":  # python -m torchshield.cli.app
    main()
