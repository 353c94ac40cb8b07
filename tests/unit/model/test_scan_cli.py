"""`torchshield model scan`: exit codes, JSON, --allow, human table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import scan_corpus as corpus
import typer
from typer.testing import CliRunner

from torchshield.cli.app import run


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "safe": tmp_path / "safe.pkl",
        "evil": tmp_path / "evil.pt",
        "unknown": tmp_path / "unknown.pkl",
        "empty": tmp_path / "empty.pt",
    }
    out["safe"].write_bytes(corpus.p2(b"}q\x00"))
    out["evil"].write_bytes(corpus.torch_zip(corpus.reduce_payload("subprocess", "Popen", proto=4)))
    out["unknown"].write_bytes(corpus.reduce_payload("mypkg.models", "Net"))
    out["empty"].write_bytes(b"")
    return out


def test_exit_codes(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["model", "scan", str(files["safe"])]) == 0
    assert run(["model", "scan", str(files["safe"]), str(files["evil"])]) == 1
    assert run(["model", "scan", str(files["empty"])]) == 2
    assert run(["model", "scan", str(files["empty"]), str(files["evil"])]) == 1
    out = capsys.readouterr().out
    assert "subprocess.Popen" in out and "archive/data.pkl" in out and "UNREADABLE" in out


def test_json_document(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = run(["model", "scan", str(files["evil"]), str(files["safe"]), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["safe"] is False and doc["exit_code"] == 1
    evil, safe = doc["files"]
    assert evil["status"] == "unsafe" and safe["status"] == "safe"
    finding = evil["findings"][0]
    assert finding["callable"] == "subprocess.Popen" and finding["member"] == "archive/data.pkl"
    assert finding["severity"] == "critical" and isinstance(finding["offset"], int)


def test_allow_accepts_unknown_names(files: dict[str, Path]) -> None:
    assert run(["model", "scan", str(files["unknown"])]) == 1
    assert run(["model", "scan", str(files["unknown"]), "--allow", "mypkg.models.Net"]) == 0
    assert run(["model", "scan", str(files["unknown"]), "--allow", "mypkg.*"]) == 0
    assert run(["model", "scan", str(files["evil"]), "--allow", "subprocess.*"]) == 1


def test_register_into_a_fresh_group(files: dict[str, Path]) -> None:
    from torchshield.cli.model_scan_cmd import register_into

    group = typer.Typer()
    register_into(group)
    group.command("noop")(lambda: None)  # two commands keep the group a group
    result = CliRunner().invoke(group, ["scan", str(files["evil"]), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["files"][0]["status"] == "unsafe"


def test_top_level_api_is_lazy_mapped() -> None:
    import torchshield
    from torchshield.model.scan import scan

    assert torchshield.scan is scan
