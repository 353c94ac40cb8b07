"""The `torchshield` command line: one Typer group per capability (see app.py)."""
