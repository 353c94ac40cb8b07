"""Regression tests for issue 17, findings 5 and 6: rows numbered outside 1..head are reported by
`audit verify` and never served as records; a deleted or edited head is tampering (exit 1), not a
crash."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from torchshield.cli.app import run
from torchshield.serve.audit import AuditLog


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'shield.db'}"


@pytest.fixture
def log(url, key_file):
    from torchshield.crypto.keys import read_key_file
    from torchshield.serve.db import open_database

    db = open_database(url)
    audit = AuditLog(db, read_key_file(key_file))
    audit.append_many([{"action": "predict", "n": i, "status": 200} for i in range(5)])
    yield audit
    db.dispose()


def _exec(log, stmt):
    with log._db.writing() as conn:
        conn.execute(stmt)


def _forge(log, seq):
    """A row the attacker adds below the chain: copied from record 1, renumbered."""
    t = log._db.t("audit_log")
    first = next(iter(log.iter_rows()))
    body = json.loads(first.body)
    body.update(seq=seq, action="keys.create", status=201)
    _exec(log, sa.insert(t).values(seq=seq, ts=first.ts, body=json.dumps(body), prev_mac="0" * 64, mac=first.mac))


def _verify_cli(url, key_file, capsys):
    code = run(["audit", "verify", "--json", "--db", url, "--key-file", str(key_file)])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("seq", [0, -1, -7])
def test_rows_below_the_chain_are_tampering_and_never_served(log, url, key_file, capsys, seq):
    _forge(log, seq)
    report = log.verify()
    assert not report.ok and report.first_bad == seq and "outside the chain" in report.reason
    assert [r["seq"] for r in log.records(after_seq=-10)] == [1, 2, 3, 4, 5]
    code, out = _verify_cli(url, key_file, capsys)
    assert code == 1 and out["ok"] is False and out["first_bad"] == seq


def test_rows_past_the_head_are_tampering_and_never_served(log, url, key_file, capsys):
    _forge(log, 6)
    report = log.verify()
    assert not report.ok and report.first_bad == 6
    assert [r["seq"] for r in log.records()] == [1, 2, 3, 4, 5]
    assert _verify_cli(url, key_file, capsys)[0] == 1


def test_deleted_head_is_reported_as_tampering(log, url, key_file, capsys):
    _exec(log, sa.delete(log._db.t("audit_head")))
    report = log.verify()
    assert not report.ok and "head is missing" in report.reason
    code, out = _verify_cli(url, key_file, capsys)
    assert code == 1 and "head is missing" in out["reason"]
    assert log.records() == []


def test_edited_head_mac_is_reported(log, url, key_file, capsys):
    head = log._db.t("audit_head")
    _exec(log, sa.update(head).values(mac="ab" * 32))
    report = log.verify()
    assert not report.ok and report.first_bad == 5 and "head" in report.reason
    assert _verify_cli(url, key_file, capsys)[0] == 1


def test_rewound_head_is_reported(log):
    head = log._db.t("audit_head")
    row = next(r for r in log.iter_rows() if r.seq == 3)
    _exec(log, sa.update(head).values(seq=3, mac=row.mac))
    report = log.verify()
    assert not report.ok and report.first_bad == 4 and "past the head" in report.reason
