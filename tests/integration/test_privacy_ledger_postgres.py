"""The privacy-budget ledger on a real PostgreSQL: two processes racing for the last of a budget
never overspend it (row lock on the data set), and the hash chain holds. Runs when
TORCHSHIELD_TEST_PG_URL points at a server (`eval "$(.ci/postgres.sh)"` starts one)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap

import pytest

PG_URL = os.environ.get("TORCHSHIELD_TEST_PG_URL")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not PG_URL, reason="PostgreSQL not reachable: set TORCHSHIELD_TEST_PG_URL "
                                                    "(eval \"$(.ci/postgres.sh)\" starts a local server)")]

CHILD = textwrap.dedent("""
    import json, sys
    from torchshield.errors import PrivacyBudgetExceeded
    from torchshield.privacy.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    ok = refused = 0
    for i in range(15):
        try:
            ledger.charge("d" * 64, plan={"who": sys.argv[2], "i": i}, mechanism="laplace", noise_scale=1.0,
                          epsilon=0.1).commit(i)
            ok += 1
        except PrivacyBudgetExceeded:
            refused += 1
    print(json.dumps({"ok": ok, "refused": refused}))
""")


@pytest.fixture
def pg_url():
    import sqlalchemy as sa

    base = sa.engine.make_url(PG_URL)
    name = f"ts_ledger_{secrets.token_hex(4)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not usable: {exc.orig}")
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


def test_two_processes_cannot_double_spend_on_postgres(pg_url):
    from torchshield.privacy.ledger import Ledger

    ledger = Ledger(pg_url)
    assert ledger.engine.dialect.name == "postgresql"
    ledger.register("d" * 64, epsilon=2.0)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, pg_url, who], stdout=subprocess.PIPE, text=True)
             for who in ("p1", "p2")]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(r["ok"] for r in results) == 20 and sum(r["refused"] for r in results) == 10
    assert ledger.budget("d" * 64).spent_epsilon == pytest.approx(2.0)
    assert ledger.verify("d" * 64) == []
    ledger.close()
