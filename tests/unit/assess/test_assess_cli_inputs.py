"""Bad or partial inputs: the demo refuses a folder it did not make, the serving check reports
an unreachable service and judges the transport from the URL alone."""

from __future__ import annotations

import json

import pytest

from torchshield.assess.checks.serving import check_serving
from torchshield.assess.context import AssessContext, AssessInputs


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    from torchshield.cli.app import run

    (tmp_path / "precious.txt").write_text("keep me")
    assert run(["demo", "--out", str(tmp_path), "--quick"]) == 2
    assert "not made by the demo" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("scheme", "host", "tls"),
    [("https", "models.example", "pass"), ("http", "127.0.0.1", "warn"), ("http", "192.0.2.1", "fail")],
)
def test_transport_verdict(scheme, host, tls):
    from torchshield.assess.checks.serving import _tls
    from torchshield.assess.findings import Section

    s = Section("serving", "Serving")
    _tls(s, scheme, host)
    assert s.findings[0].verdict == tls


def test_unreachable_service_fails_without_leaking_the_key(tmp_path):
    ctx = AssessContext(
        AssessInputs(model=tmp_path / "m.tsb", endpoint="http://127.0.0.1:9", api_key="tsk_secret_token")
    )
    s = check_serving(ctx)
    assert {f.check: f.verdict for f in s.findings}["reachable"] == "fail"
    assert "tsk_secret_token" not in json.dumps(s.to_dict())
