"""The `torchshield store` commands end to end, in-process."""

from __future__ import annotations

import json
from pathlib import Path

from store_fixtures import random_bytes

from torchshield.cli.app import run
from torchshield.crypto.keys import write_key_file


def _json(capsys, argv: list[str], code: int = 0):  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert run(argv + ["--json"]) == code
    return json.loads(capsys.readouterr().out)


def test_store_commands_round_trip(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    key, new_key = tmp_path / "a.key", tmp_path / "b.key"
    write_key_file(key)
    write_key_file(new_key)
    vault, k = str(tmp_path / "vault"), ["-k", str(key)]
    data = random_bytes(2_500_000, 4)
    (tmp_path / "f").write_bytes(data)
    assert run(["store", "init", vault, *k]) == 0
    put = _json(capsys, ["store", "put", vault, str(tmp_path / "f"), "--name", "patients", "--tag", "v3",
                         "--meta", "source=his", *k])
    assert put["snapshot"]["name"] == "patients" and put["new_chunks"] == put["chunks"]
    assert _json(capsys, ["store", "put", vault, str(tmp_path / "f"), "--name", "patients", *k])["new_chunks"] == 0
    listed = _json(capsys, ["store", "list", vault, *k])["objects"]
    assert [(o["name"], o["versions"]) for o in listed] == [("patients", 2)]
    log = _json(capsys, ["store", "log", vault, "patients", *k])["versions"]
    assert [v["tag"] for v in log] == ["v3", None] and log[0]["metadata"] == {"source": "his"}
    assert run(["store", "get", vault, "patients", "--version", "v3", "-o", str(tmp_path / "g"), *k]) == 0
    assert (tmp_path / "g").read_bytes() == data
    bk = _json(capsys, ["store", "backup", vault, "--to", str(tmp_path / "bk")])
    assert bk["chunks_copied"] >= 1
    rotated = _json(capsys, ["store", "rotate-key", vault, "--old", str(key), "--new", str(new_key)])
    assert rotated["rewrapped"] == 3
    k = ["-k", str(new_key)]
    assert _json(capsys, ["store", "verify", vault, *k])["ok"] is True
    restored = _json(capsys, ["store", "restore", vault, "--snapshot", log[0]["id"][:8], "--to",
                              str(tmp_path / "r"), *k])["restored"]
    assert Path(restored[0]["path"]).read_bytes() == data
    pr = _json(capsys, ["store", "prune", vault, "--keep-last", "1", *k])
    assert len(pr["forgotten"]) == 1 and pr["chunks_deleted"] == 0  # both versions share all chunks
    # bad input: wrong key (exit 2), path trick in a name (exit 2), not a vault (exit 2)
    assert run(["store", "list", vault, "-k", str(key)]) == 2
    assert "key id" in capsys.readouterr().err
    assert run(["store", "put", vault, str(tmp_path / "f"), "--name", "../x", *k]) == 2
    assert run(["store", "list", str(tmp_path), *k]) == 2
