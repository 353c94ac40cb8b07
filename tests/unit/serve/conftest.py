"""Fixtures for the serving unit tests (helpers shared with integration tests live in
tests/integration/serve_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))

from serve_harness import make_bundle, make_service  # noqa: E402


@pytest.fixture
def db(tmp_path):
    from torchshield.serve.db import open_database

    database = open_database(f"sqlite:///{tmp_path / 'serve.db'}")
    yield database
    database.dispose()


@pytest.fixture
def service(tmp_path, master_key):
    svc = make_service(tmp_path, master_key)
    yield svc
    svc.close()


@pytest.fixture
def bundle(tmp_path, master_key):
    return make_bundle(tmp_path / "digits.tsb", master_key)
