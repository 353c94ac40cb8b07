"""The privacy-budget ledger on a real PostgreSQL: two processes racing for the last of a budget
never overspend it (row lock on the data set), and the hash chain holds. Runs when
TORCHSHIELD_TEST_PG_URL points at a server (`eval "$(.ci/postgres.sh)"` starts one)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from torchshield.crypto.keys import read_key_file

pytestmark = pytest.mark.integration  # the pg_db fixture (tests/integration/conftest.py) skips without a server

CHILD = textwrap.dedent("""
    import json, sys
    from torchshield.errors import PrivacyBudgetExceeded
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.privacy.ledger import Ledger
    ledger = Ledger(sys.argv[1], key=resolve_master_key())  # this child is an edge: key from the environment
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


def test_two_processes_cannot_double_spend_on_postgres(pg_db, key_file, monkeypatch):
    from torchshield.privacy.ledger import Ledger

    monkeypatch.setenv("TORCHSHIELD_KEY_FILE", str(key_file))  # the ledger's chain is keyed (children inherit it)

    ledger = Ledger(pg_db, key=read_key_file(key_file))
    assert ledger.engine.dialect.name == "postgresql"
    ledger.register("d" * 64, epsilon=2.0)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, pg_db, who], stdout=subprocess.PIPE, text=True)
             for who in ("p1", "p2")]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(r["ok"] for r in results) == 20 and sum(r["refused"] for r in results) == 10
    assert ledger.budget("d" * 64).spent_epsilon == pytest.approx(2.0)
    assert ledger.verify("d" * 64) == []
    ledger.close()


REGISTER = textwrap.dedent("""
    import json, sys
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.privacy.ledger import Ledger
    ledger = Ledger(sys.argv[1], key=resolve_master_key())  # this child is an edge: key from the environment
    ok = 0
    for i in range(20):
        ledger.register(f"{i:064d}", epsilon=1.0)  # every process registers the same new data sets
        ok += 1
    print(json.dumps({"ok": ok}))
""")


def test_processes_registering_the_same_new_data_sets_at_once_all_succeed(pg_db, key_file, monkeypatch):
    from torchshield.privacy.ledger import Ledger

    monkeypatch.setenv("TORCHSHIELD_KEY_FILE", str(key_file))  # the ledger's chain is keyed (children inherit it)

    Ledger(pg_db, key=read_key_file(key_file)).close()  # tables created once, before the race
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER, pg_db], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-300:] for _, err in outs]
    assert [json.loads(out)["ok"] for out, _ in outs] == [20] * 4
    ledger = Ledger(pg_db, key=read_key_file(key_file))
    assert len(ledger.dataset_ids()) == 20
    ledger.close()
