"""The report's serving section says whether the served bundles are signed by a trusted key,
from what a real service reports over HTTP (issue 17, finding 7)."""

from __future__ import annotations

import pytest
from serve_harness import make_bundle, make_service, running
from starlette.requests import Request  # module level: FastAPI resolves the string annotation here


@pytest.mark.parametrize("opt_out", [False, True], ids=["trusted", "allow-unsigned"])
def test_report_checks_served_bundles_are_signed_by_a_trusted_key(tmp_path, master_key, opt_out):
    from torchshield.assess.checks.serving import check_serving
    from torchshield.assess.context import AssessContext, AssessInputs
    from torchshield.serve.http import create_app

    if opt_out:
        make_bundle(tmp_path / "iris.tsb", master_key, name="iris", sign=False)  # the service signs nothing itself
    svc = make_service(tmp_path, master_key, models=("digits",) if not opt_out else ("digits", "iris"),
                       allow_unsigned=opt_out, rate_per_s=5, burst=5)
    if opt_out:  # make_service re-signed iris: put the unsigned one back and reload under the opt-out
        make_bundle(tmp_path / "iris.tsb", master_key, name="iris", sign=False)
        svc.reload_models()
    token = svc.keys.create(role="admin").token
    try:
        with running(create_app(svc)) as url:
            s = check_serving(AssessContext(AssessInputs(model=tmp_path / "digits.tsb", endpoint=url, api_key=token,
                                                             endpoint_timeout_s=120)))
    finally:
        svc.close()
    verdicts = {f.check: f.verdict for f in s.findings}
    assert verdicts["signed-models"] == ("fail" if opt_out else "pass"), s.to_dict()
    if opt_out:
        assert "iris" in next(f.reason for f in s.findings if f.check == "signed-models")


def test_a_service_that_stops_answering_midway_is_a_finding_not_a_crash(tmp_path):
    """A real server that answers the probes, then hangs on the authenticated call: the section
    reports it (with the timeout used) instead of raising out of the report."""
    import asyncio

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from torchshield.assess.checks.serving import check_serving
    from torchshield.assess.context import AssessContext, AssessInputs

    app = FastAPI()
    release = asyncio.Event()

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if "authorization" not in request.headers:
            return JSONResponse({"error": "no key"}, status_code=401)
        await asyncio.wait_for(release.wait(), 30)  # never set: the client's timeout ends it
        return JSONResponse({"models": []})

    with running(app) as url:
        s = check_serving(AssessContext(AssessInputs(model=tmp_path / "m.tsb", endpoint=url, api_key="tsk_x",
                                                     endpoint_timeout_s=0.5)))
    stopped = [f for f in s.findings if f.check == "reachable" and f.verdict == "fail"]
    assert stopped and "stopped answering" in stopped[0].reason and "0.5 s" in stopped[0].reason, s.to_dict()
