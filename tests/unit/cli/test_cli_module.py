"""``python -m torchshield`` and ``python -m torchshield.cli.app`` run the CLI (and its exit codes)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["torchshield", "torchshield.cli.app"])
def test_the_cli_runs_as_a_module(module, tmp_path):
    ok = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "torchshield" in ok.stdout.lower()
    bad = subprocess.run([sys.executable, "-m", module, "model", "inspect", str(tmp_path / "absent.tsb")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "absent.tsb" in bad.stderr
