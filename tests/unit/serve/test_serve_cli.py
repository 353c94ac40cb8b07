"""`torchshield access` and `torchshield audit` in-process: keys printed once, exit codes, and a
database that cannot be written refused at start."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from torchshield.cli.app import run


def _json(capsys):
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def cli(tmp_path, key_file):
    url = f"sqlite:///{tmp_path / 'shield.db'}"

    def go(*args: str) -> int:
        return run([*args, "--db", url, "--key-file", str(key_file)])

    go.url = url
    go.path = tmp_path / "shield.db"
    return go


def test_bootstrap_once_then_keys_lifecycle(cli, capsys):
    assert cli("access", "bootstrap", "--json") == 0
    first = _json(capsys)
    assert first["key"]["role"] == "admin" and first["token"].startswith("tsk_")
    assert cli("access", "bootstrap", "--json") == 3  # refused: an admin exists
    assert "admin key exists" in capsys.readouterr().err
    assert cli("access", "create-key", "--role", "predictor", "--model", "digits", "--expires", "30d", "--json") == 0
    new = _json(capsys)
    assert new["key"]["models"] == ["digits"] and new["key"]["expires_at"] > new["key"]["created_at"] + 29 * 86400
    assert cli("access", "list", "--json") == 0
    listed = _json(capsys)["keys"]
    assert {k["key_id"] for k in listed} == {first["key"]["key_id"], new["key"]["key_id"]}
    assert "tsk_" not in json.dumps(listed)
    assert cli("access", "revoke", new["key"]["key_id"], "--json") == 0 and _json(capsys)["changed"]
    assert cli("access", "revoke", "0123456789abcdef") == 2
    assert cli("access", "create-key", "--role", "root") == 2
    assert cli("access", "roles", "--json") == 0
    assert "audit:read" in _json(capsys)["roles"]["auditor"]


def test_audit_verify_exit_codes_and_export(cli, capsys, key_file):
    from torchshield.crypto.keys import read_key_file
    from torchshield.serve.audit import AuditLog
    from torchshield.serve.db import open_database

    db = open_database(cli.url)
    AuditLog(db, read_key_file(key_file)).append_many([{"action": "predict", "n": i} for i in range(5)])
    assert cli("audit", "verify", "--json") == 0 and _json(capsys)["records"] == 5
    assert cli("audit", "export", "--json") == 0 and len(_json(capsys)["records"]) == 5
    assert cli("audit", "export", "--since", "2999-01-01", "--json") == 0 and _json(capsys)["records"] == []
    with sqlite3.connect(cli.path) as conn:
        conn.execute("UPDATE serve_audit_log SET body = replace(body, '\"n\":2', '\"n\":7') WHERE seq = 3")
    assert cli("audit", "verify") == 1
    assert "first bad record 3" in capsys.readouterr().out.replace("\n", " ")
    db.dispose()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_database_is_refused_at_start(cli, capsys):
    assert cli("access", "list") == 0
    for p in cli.path.parent.glob("shield.db*"):
        p.chmod(0o444)
    cli.path.parent.chmod(0o555)
    try:
        assert cli("access", "list") == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        cli.path.parent.chmod(0o755)


def test_read_only_database_is_refused_at_start_via_sqlite_uri(tmp_path, master_key):
    """Root ignores file modes, so open the database read-only through SQLite's URI instead."""
    from torchshield.errors import InputError
    from torchshield.serve.db import open_database

    path = tmp_path / "ro.db"
    open_database(f"sqlite:///{path}").dispose()
    with pytest.raises(InputError, match="read-only"):
        open_database(f"sqlite:///file:{path}?mode=ro&uri=true")


def test_unparseable_and_unknown_urls(tmp_path):
    from torchshield.errors import InputError
    from torchshield.serve.db import open_database

    with pytest.raises(InputError, match="--db"):
        open_database("not a url")
    with pytest.raises(InputError, match="--db"):
        open_database("nosuchdialect://x/y")
    with pytest.raises(InputError, match="unreachable"):
        open_database(f"sqlite:///{tmp_path}/missing-dir/x.db")


def test_serve_refuses_mismatched_tls_and_missing_bundles(tmp_path, key_file):
    assert run(["serve", str(tmp_path / "none.tsb"), "--key-file", str(key_file)]) == 2
    assert run(["serve", str(key_file), "--tls-cert", str(key_file)]) == 2
    assert run(["serve", str(key_file), "--key-file", str(key_file), "--loop-budget-ms", "-1"]) == 2


def test_serve_refuses_a_missing_or_malformed_privacy_policy(tmp_path, key_file, capsys):
    from serve_harness import make_bundle, make_signer

    bundle = make_bundle(tmp_path / "digits.tsb")
    pub = make_signer(tmp_path)[1]
    base = ["serve", str(bundle), "--key-file", str(key_file), "--trust", str(pub), "--db",
            f"sqlite:///{tmp_path / 's.db'}"]
    assert run([*base, "--privacy-policy", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ngateway:\n  on_leak: shout\n")
    assert run([*base, "--privacy-policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "on_leak" in err and "Traceback" not in err
    assert run([*base, "--privacy-policy", f"digits={bad}"]) == 2  # a model's own policy is checked too
    assert "on_leak" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\ndefault: placeholder\n")
    assert run([*base, "--privacy-policy", str(good), "--privacy-policy", str(good)]) == 2
    assert "two policies for every model" in capsys.readouterr().err
    assert run([*base, "--privacy-policy", f"digits={tmp_path / 'none.yaml'}"]) == 2
    assert "none.yaml" in capsys.readouterr().err
