"""The assess and demo packages keep a small sorted surface and stay light to import (the CLI
imports their command modules for every `torchshield --help`)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("name", ["torchshield.assess", "torchshield.demo"])
def test_all_is_sorted_and_resolves(name):
    mod = importlib.import_module(name)
    assert list(mod.__all__) == sorted(mod.__all__)
    for attr in mod.__all__:
        assert getattr(mod, attr) is not None


def test_import_is_light():
    code = (
        "import sys, torchshield.assess, torchshield.demo, torchshield.cli.report_cmd, torchshield.cli.demo_cmd;"
        "print(','.join(m for m in ('torch', 'pandas', 'matplotlib', 'jinja2', 'httpx', 'fastapi')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing assess/demo loaded heavy modules: {out}"


def test_template_ships_as_package_data():
    from importlib import resources

    assert resources.files("torchshield.assess").joinpath("templates", "report.html.j2").is_file()
