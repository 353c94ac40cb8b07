"""Fixtures for tests that use real services."""

from __future__ import annotations

import os

import pytest
from services import service_missing

PG_URL = os.environ.get("TORCHSHIELD_TEST_PG_URL")


@pytest.fixture
def pg_db():
    """URL of a fresh database on the test server, dropped afterwards."""
    import sqlalchemy as sa

    if not PG_URL:
        service_missing("postgres", "PostgreSQL not reachable: set TORCHSHIELD_TEST_PG_URL "
                        "(eval \"$(.ci/postgres.sh)\" starts a local server)")
    base = sa.engine.make_url(PG_URL)
    name = f"ts_test_{os.urandom(4).hex()}"  # OS entropy: never a name a crashed earlier run left behind
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        service_missing("postgres", f"PostgreSQL at {base.render_as_string(hide_password=True)} not usable: {exc.orig}")
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()
