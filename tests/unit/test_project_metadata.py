"""Project hygiene that a release depends on: one version, a license the metadata names."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import torchshield

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_has_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("torchshield") == torchshield.__version__


def test_the_license_file_is_apache_2_and_the_metadata_says_so():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
