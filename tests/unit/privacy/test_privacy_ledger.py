"""The budget ledger: charge before answer, refuse overspend (also across processes), exact sums, history."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from torchshield.cli.app import run
from torchshield.crypto.keys import MasterKey, write_key_file
from torchshield.errors import InputError, PrivacyBudgetExceeded
from torchshield.privacy.ledger import Ledger
from torchshield.privacy.queries import Dataset, gaussian_sigma

# The ledger's chain is keyed. The library takes this MasterKey itself and never looks at the
# environment; the CLI (the edge) resolves it from TORCHSHIELD_KEY_FILE, set below.
KEY = MasterKey(bytes(range(32)))


@pytest.fixture(autouse=True)
def ledger_key(tmp_path, monkeypatch):
    path = tmp_path / "ledger.key"
    write_key_file(path, KEY)
    monkeypatch.setenv("TORCHSHIELD_KEY_FILE", str(path))
    return KEY


@pytest.fixture()
def table(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 90, 2000), "city": rng.choice(["bj", "sh", "gz"], 2000),
                       "income": rng.normal(8000, 2000, 2000)})
    path = tmp_path / "people.parquet"
    df.to_parquet(path)
    return df, path


def _ds(df, tmp_path, **kw):
    return Dataset(df, ledger=f"sqlite:///{tmp_path / 'ledger.db'}", key=KEY, bounds={"age": (0, 120)},
                   rng=random.Random(1), actor="alice", **kw)


def test_answers_are_noisy_but_close_and_charged(table, tmp_path):
    df, _ = table
    ds = _ds(df, tmp_path, budget=(10.0, 1e-6))
    assert ds.count(epsilon=1.0) == pytest.approx(2000, abs=30)
    assert ds.sum("age", epsilon=1.0) == pytest.approx(df.age.sum(), abs=120 * 30)
    assert ds.mean("age", epsilon=1.0) == pytest.approx(df.age.mean(), abs=2)
    assert ds.quantile("age", 0.5, epsilon=1.0) == pytest.approx(df.age.median(), abs=5)
    hist = ds.histogram("city", epsilon=1.0, categories=["bj", "sh", "gz", "sz"])
    assert set(hist) == {"bj", "sh", "gz", "sz"} and hist["sz"] == pytest.approx(0, abs=30)
    assert ds.count(epsilon=0.5, delta=1e-7, mechanism="gaussian") == pytest.approx(2000, abs=200)
    budget = ds.ledger.budget(ds.dataset_id)
    assert budget.spent_epsilon == pytest.approx(5.5) and budget.spent_delta == pytest.approx(1e-7)
    entries = ds.ledger.entries_for(ds.dataset_id)
    assert [e.plan["query"] for e in entries] == ["count", "sum", "mean", "quantile", "histogram", "count"]
    assert all(e.actor == "alice" and e.status == "committed" for e in entries)


def test_refuses_the_query_that_would_overspend(table, tmp_path):
    df, _ = table
    ds = _ds(df, tmp_path, budget=(1.0, 0.0))
    ds.count(epsilon=0.7)
    with pytest.raises(PrivacyBudgetExceeded, match="epsilon=0.3.* left"):
        ds.sum("age", epsilon=0.4)
    ds.sum("age", epsilon=0.3)  # exactly the rest is allowed
    with pytest.raises(PrivacyBudgetExceeded):
        ds.count(epsilon=1e-12)


def test_tiny_costs_are_never_lost(table, tmp_path):
    """Outward rounding: a cost below the unit still costs a unit, so 1e-15 spends add up."""
    df, _ = table
    ds = _ds(df, tmp_path, budget=(3e-12, 0.0))
    for i in range(3):
        ds.ledger.charge(ds.dataset_id, plan={"i": i}, mechanism="laplace", noise_scale=1.0, epsilon=1e-15)
    with pytest.raises(PrivacyBudgetExceeded):
        ds.ledger.charge(ds.dataset_id, plan={"i": 9}, mechanism="laplace", noise_scale=1.0, epsilon=1e-15)


def test_same_plan_is_answered_from_the_ledger_at_no_cost(table, tmp_path):
    df, _ = table
    ds = _ds(df, tmp_path, budget=(1.0, 0.0))
    first = ds.count(epsilon=0.5)
    assert ds.count(epsilon=0.5) == first
    assert ds.ledger.budget(ds.dataset_id).spent_epsilon == pytest.approx(0.5)


def test_crash_between_charge_and_answer_still_counts(table, tmp_path):
    df, _ = table
    ds = _ds(df, tmp_path, budget=(1.0, 0.0))
    ds.ledger.charge(ds.dataset_id, plan={"query": "count"}, mechanism="laplace", noise_scale=1, epsilon=0.8)
    # the process died here: no commit; a new process sees the reservation as spent
    again = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", key=KEY)
    assert again.budget(ds.dataset_id).spent_epsilon == pytest.approx(0.8)
    assert again.entries_for(ds.dataset_id)[0].status == "reserved"


def test_declared_bounds_and_budget_are_required(table, tmp_path):
    df, _ = table
    ds = _ds(df, tmp_path, budget=(1.0, 0.0))
    with pytest.raises(InputError, match="no declared bounds"):
        ds.sum("income", epsilon=0.1)
    with pytest.raises(InputError, match="categories or bins"):
        ds.histogram("city", epsilon=0.1)
    with pytest.raises(InputError, match="no privacy budget yet"):
        Dataset(df.head(10), ledger=ds.ledger)
    with pytest.raises(InputError, match=">= 1/N for N=2000"):
        _ds(df, tmp_path / "other", budget=(1.0, 1e-3))
    with pytest.raises(InputError, match="already has budget"):
        _ds(df, tmp_path, budget=(2.0, 0.0))


def test_history_tampering_is_detected(table, tmp_path):
    df, _ = table
    ds = _ds(df, tmp_path, budget=(5.0, 0.0))
    for eps in (0.1, 0.2, 0.3):
        ds.count(epsilon=eps)
    assert ds.ledger.verify(ds.dataset_id) == []
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute("UPDATE privacy_ledger SET epsilon_units = 1 WHERE seq = 2")
    assert any("entry 2" in p for p in ds.ledger.verify(ds.dataset_id))


def test_read_only_ledger_is_a_clear_error(table, tmp_path):
    df, _ = table
    path = tmp_path / "ro.db"
    _ds(df, tmp_path, budget=(1.0, 0.0)).ledger.close()
    Ledger(f"sqlite:///{path}", key=KEY).close()
    # opened read-only (as a read-only mount or file would be): refused up front, with the reason
    with pytest.raises(InputError, match="cannot write .*readonly"):
        Ledger(f"sqlite:///file:{path}?mode=ro&uri=true", key=KEY)


def test_gaussian_sigma_is_tight():
    # classical bound sqrt(2 ln(1.25/delta))/eps = 4.84 at (1, 1e-5); the analytic mechanism needs less
    sigma = gaussian_sigma(1.0, 1e-5, 1.0)
    assert 3.6 < sigma < 3.8
    assert gaussian_sigma(1.0, 1e-5, 2.0) == pytest.approx(2 * sigma, rel=1e-6)


CHILD = textwrap.dedent("""
    import json, random, sys
    import pandas as pd
    from torchshield.errors import PrivacyBudgetExceeded
    from torchshield.crypto.keys import resolve_master_key
    from torchshield.privacy.queries import Dataset
    df = pd.read_parquet(sys.argv[1])
    key = resolve_master_key()  # this child is an edge: the key from the environment, resolved once
    ds = Dataset(df, ledger=sys.argv[2], key=key, actor=sys.argv[3], rng=random.Random())
    ok = refused = 0
    for i in range(12):
        try:
            ds.histogram("city", epsilon=0.05, categories=[sys.argv[3], str(i)])
            ok += 1
        except PrivacyBudgetExceeded:
            refused += 1
    print(json.dumps({"ok": ok, "refused": refused}))
""")


def test_two_processes_cannot_double_spend(table, tmp_path):
    df, path = table
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Dataset(df, ledger=url, key=KEY, budget=(1.0, 0.0))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), url, who], stdout=subprocess.PIPE, text=True)
             for who in ("p1", "p2")]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(r["ok"] for r in results) == 20  # 20 x 0.05 = 1.0 exactly, never more
    assert sum(r["refused"] for r in results) == 4
    ledger = Ledger(url, key=KEY)
    (dataset_id, _), = ledger.dataset_ids()
    assert ledger.budget(dataset_id).spent_epsilon == pytest.approx(1.0)
    assert ledger.verify(dataset_id) == []


def test_cli_query_and_ledger_show(table, tmp_path, capsys):
    _, path = table
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    args = ["data", "query", str(path), "mean", "age", "--epsilon", "0.5", "--bounds", "age=0:120",
            "--ledger", url, "--actor", "bob", "--json"]
    assert run([*args, "--budget-epsilon", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert 40 < doc["answer"] < 70 and doc["remaining"]["epsilon"] == pytest.approx(0.5)
    assert run(["data", "query", str(path), "sum", "age", "--epsilon", "0.6", "--bounds", "age=0:120",
                "--ledger", url]) == 3
    assert "refused" in capsys.readouterr().err
    assert run(["data", "query", str(path), "sum", "income", "--epsilon", "0.1", "--ledger", url]) == 2
    assert "no declared bounds" in capsys.readouterr().err
    assert run(["privacy", "ledger", "show", str(path), "--ledger", url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["spent"]["epsilon"] == pytest.approx(0.5) and shown[0]["entries"][0]["actor"] == "bob"
    assert run(["privacy", "ledger", "verify", "--ledger", url]) == 0


def test_a_budget_or_cost_above_the_ledger_limit_is_a_clear_input_error(tmp_path, capsys):
    ledger = Ledger(f"sqlite:///{tmp_path / 'big.db'}", key=KEY)
    with pytest.raises(InputError, match="above the ledger's limit"):
        ledger.register("d" * 64, epsilon=1e7)  # 1e19 units: overflowed the 64-bit column (exit 70)
    ledger.register("d" * 64, epsilon=1e6)  # the limit itself fits
    with pytest.raises(InputError, match="above the ledger's limit"):
        ledger.charge("d" * 64, plan={"q": 1}, mechanism="laplace", noise_scale=1.0, epsilon=2e7)
    assert ledger.budget("d" * 64).spent_epsilon == 0


def test_cli_query_with_a_huge_budget_exits_2(table, tmp_path, capsys):
    _, path = table
    assert run(["data", "query", str(path), "mean", "age", "--epsilon", "0.5", "--bounds", "age=0:120",
                "--ledger", f"sqlite:///{tmp_path / 'cli.db'}", "--budget-epsilon", "1e7"]) == 2
    err = capsys.readouterr().err
    assert "limit" in err and "Traceback" not in err


def test_registration_race_lost_on_insert_retries_and_agrees(tmp_path, monkeypatch):
    """PostgreSQL has no table lock: two processes may both read "no such data set" and both insert.
    The loser's IntegrityError is retried, finds the winner's row and accepts the same budget."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    winner, loser = Ledger(url, key=KEY), Ledger(url, key=KEY)
    real = Ledger._dataset_row
    calls = []

    def stale_read(self, conn, dataset_id):
        calls.append(dataset_id)
        if len(calls) == 1:  # our first read happened before the winner's insert
            winner_row = real(self, conn, dataset_id)
            assert winner_row is not None
            return None
        return real(self, conn, dataset_id)

    winner.register("e" * 64, epsilon=2.0)
    monkeypatch.setattr(Ledger, "_dataset_row", stale_read)
    budget = loser.register("e" * 64, epsilon=2.0)
    assert budget.epsilon == 2.0 and len(calls) == 2
    calls.clear()
    with pytest.raises(InputError, match="already has budget"):  # a different budget is still refused
        loser.register("e" * 64, epsilon=3.0)
