"""The privacy ledger's history is on the shared keyed hash chain (issue 17): whoever can write
the database but lacks the master key cannot rewrite it undetected, even knowing our method;
old unkeyed ledgers are refused on open and re-chained only explicitly, after a check."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from torchshield.errors import FormatError, KeyMaterialError
from torchshield.privacy.ledger import Ledger

DS = "d" * 64


@pytest.fixture
def ledger(tmp_path, master_key):
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", key=master_key)
    book.register(DS, epsilon=5.0)
    for i in range(4):
        book.charge(DS, plan={"q": i}, mechanism="laplace", noise_scale=1.0, epsilon=0.5).commit(i)
    yield book
    book.close()


def _sql(tmp_path, stmt, *args):
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute(stmt, args)


def test_intact_and_needs_the_key(ledger, tmp_path, master_key, key_file, monkeypatch):
    assert ledger.verify(DS) == []
    # The library never looks for a key itself (issue 23): the environment is read at the edge
    # (the CLI) only, so a key there does not open the ledger, nor do the raw bytes or a path.
    monkeypatch.setenv("TORCHSHIELD_KEY_FILE", str(key_file))
    for wrong in (None, master_key.secret, str(key_file), key_file):
        with pytest.raises(KeyMaterialError, match="master key"):
            Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", key=wrong)
    from torchshield.crypto.keys import generate_master_key

    other = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", key=generate_master_key())
    assert other.verify(DS) and "entry 1" in other.verify(DS)[0]


def test_rewritten_history_with_recomputed_sha256_is_detected(ledger, tmp_path):
    """The attack the unkeyed chain allowed: lower a spend, then recompute every hash after it
    the way the old code did (SHA-256 over prev + canonical body)."""
    _sql(tmp_path, "UPDATE privacy_ledger SET epsilon_units = 1 WHERE seq = 2")
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM privacy_ledger ORDER BY seq").fetchall()
        prev = "0" * 64
        for r in rows:
            body = {k: r[k] for k in ("dataset_id", "ts", "actor", "plan", "mechanism", "noise_scale",
                                      "epsilon_units", "delta_units")}
            h = hashlib.sha256((prev + json.dumps(body, sort_keys=True, separators=(",", ":"))).encode()).hexdigest()
            conn.execute("UPDATE privacy_ledger SET prev_hash = ?, entry_hash = ? WHERE seq = ?", (prev, h, r["seq"]))
            prev = h
        conn.execute("UPDATE privacy_chain_heads SET mac = ?", (prev,))
    problems = ledger.verify(DS)
    assert problems and "entry 1" in problems[0]


@pytest.mark.parametrize("attack,where", [
    ("DELETE FROM privacy_ledger WHERE seq = 4", "head"),  # the tail cut: only the head knows
    ("DELETE FROM privacy_ledger WHERE seq = 2", "entry 3"),
    ("UPDATE privacy_ledger SET actor = 'mallory' WHERE seq = 3", "entry 3"),
    ("DELETE FROM privacy_chain_heads", "head is missing"),
])
def test_tampering_is_named(ledger, tmp_path, attack, where):
    _sql(tmp_path, attack)
    problems = ledger.verify(DS)
    assert problems and where in problems[0], problems


def test_old_unkeyed_ledger_is_refused_then_migrated_explicitly(tmp_path, master_key):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sqlite3.connect(tmp_path / "old.db") as conn:  # the layout and chain of the previous release
        conn.executescript("""
            CREATE TABLE privacy_datasets (dataset_id VARCHAR(64) PRIMARY KEY, name VARCHAR(300) NOT NULL,
              epsilon_units BIGINT NOT NULL, delta_units BIGINT NOT NULL, created_at VARCHAR(40) NOT NULL,
              created_by VARCHAR(200) NOT NULL);
            CREATE TABLE privacy_meta (id INTEGER PRIMARY KEY, opened_at VARCHAR(40) NOT NULL);
            CREATE TABLE privacy_ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, dataset_id VARCHAR(64) NOT NULL,
              ts VARCHAR(40) NOT NULL, actor VARCHAR(200) NOT NULL, plan TEXT NOT NULL, plan_hash VARCHAR(64) NOT NULL,
              mechanism VARCHAR(40) NOT NULL, noise_scale FLOAT NOT NULL, epsilon_units BIGINT NOT NULL,
              delta_units BIGINT NOT NULL, status VARCHAR(16) NOT NULL, answer TEXT, prev_hash VARCHAR(64) NOT NULL,
              entry_hash VARCHAR(64) NOT NULL);
        """)
        conn.execute("INSERT INTO privacy_datasets VALUES (?, '', 5000000000000, 0, 't', 'a')", (DS,))
        prev = "0" * 64
        for i in range(3):
            body = {"dataset_id": DS, "ts": f"2026-01-0{i + 1}", "actor": "a", "plan": json.dumps({"q": i}),
                    "mechanism": "laplace", "noise_scale": 1.0, "epsilon_units": 500000000000, "delta_units": 0}
            h = hashlib.sha256((prev + json.dumps(body, sort_keys=True, separators=(",", ":"))).encode()).hexdigest()
            conn.execute("INSERT INTO privacy_ledger (dataset_id, ts, actor, plan, plan_hash, mechanism, noise_scale, "
                         "epsilon_units, delta_units, status, answer, prev_hash, entry_hash) VALUES "
                         "(?, ?, 'a', ?, ?, 'laplace', 1.0, 500000000000, 0, 'committed', ?, ?, ?)",
                         (DS, body["ts"], body["plan"], f"p{i}", str(i), prev, h))
            prev = h
    with pytest.raises(FormatError, match="unkeyed") as exc:
        Ledger(url, key=master_key)
    assert "migrate_unkeyed" in exc.value.hint
    assert Ledger.migrate_unkeyed(url, key=master_key) == 3
    book = Ledger(url, key=master_key)
    assert book.verify(DS) == [] and book.budget(DS).spent_epsilon == pytest.approx(1.5)
    book.charge(DS, plan={"q": 9}, mechanism="laplace", noise_scale=1.0, epsilon=0.5)
    assert book.verify(DS) == []
    assert Ledger.migrate_unkeyed(url, key=master_key) == 0  # once only


def test_migration_refuses_edited_old_history(tmp_path, master_key):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executescript("""
            CREATE TABLE privacy_datasets (dataset_id VARCHAR(64) PRIMARY KEY, name VARCHAR(300) NOT NULL,
              epsilon_units BIGINT NOT NULL, delta_units BIGINT NOT NULL, created_at VARCHAR(40) NOT NULL,
              created_by VARCHAR(200) NOT NULL);
            CREATE TABLE privacy_ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, dataset_id VARCHAR(64) NOT NULL,
              ts VARCHAR(40) NOT NULL, actor VARCHAR(200) NOT NULL, plan TEXT NOT NULL, plan_hash VARCHAR(64) NOT NULL,
              mechanism VARCHAR(40) NOT NULL, noise_scale FLOAT NOT NULL, epsilon_units BIGINT NOT NULL,
              delta_units BIGINT NOT NULL, status VARCHAR(16) NOT NULL, answer TEXT, prev_hash VARCHAR(64) NOT NULL,
              entry_hash VARCHAR(64) NOT NULL);
        """)
        conn.execute("INSERT INTO privacy_datasets VALUES (?, '', 5000000000000, 0, 't', 'a')", (DS,))
        conn.execute("INSERT INTO privacy_ledger (dataset_id, ts, actor, plan, plan_hash, mechanism, noise_scale, "
                     "epsilon_units, delta_units, status, prev_hash, entry_hash) VALUES "
                     "(?, 't', 'a', '{}', 'p', 'laplace', 1.0, 1, 0, 'committed', ?, ?)", (DS, "0" * 64, "f" * 64))
    with pytest.raises(FormatError, match="entry 1"):
        Ledger.migrate_unkeyed(url, key=master_key)
