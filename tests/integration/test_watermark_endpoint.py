"""Black-box watermark verification against the real serving API on a loopback port."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from serve_harness import free_port, running  # noqa: F401 - free_port used by running


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from sklearn.datasets import load_digits

    import torchshield
    from torchshield.crypto.keys import write_key_file
    from torchshield.model.watermark import make_regularizer, write_record
    from torchshield.nn.loop import fit
    from torchshield.nn.zoo import build_model
    from torchshield.serve.http import create_app
    from torchshield.serve.service import ServeConfig, Service

    tmp = tmp_path_factory.mktemp("wm-serve")
    owner = write_key_file(tmp / "owner.key")
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    arch = {"type": "mlp", "hidden": [64]}
    bundles = {}
    for name, marked in (("stolen", True), ("independent", False)):
        torch.manual_seed(4 if marked else 9)
        model = build_model(arch, in_shape=(64,), num_classes=10)
        regs, record = make_regularizer({"method": "trigger", "triggers": 50}, model, owner) if marked else ([], None)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
        fit(model, loader, epochs=12, optimizer=torch.optim.Adam(model.parameters(), lr=2e-3),
            regularizers=regs, progress=False)
        if record is not None:
            write_record(tmp / "mark.json", record)
        meta = {"name": name, "model": arch, "input": {"shape": [64], "dtype": "float32", "min": 0, "max": 1},
                "num_classes": 10}
        bundles[name] = str(torchshield.save(model, tmp / f"{name}.tsb", metadata=meta))
    # the thief serves under its own master key
    from torchshield.crypto.keys import generate_master_key

    thief = generate_master_key()
    svc = Service.start(ServeConfig(db_url=f"sqlite:///{tmp / 'serve.db'}", bundles=tuple(bundles.values()),
                                    rate_per_s=1000, burst=1000, allow_unsigned=True), master=thief)
    token = svc.keys.create(role="predictor").token
    with running(create_app(svc)) as url:
        yield url, token, tmp
    svc.close()


def _small_server(tmp, limit):
    """The same stolen model behind a server whose body limit is ``limit`` bytes."""
    from torchshield.crypto.keys import generate_master_key
    from torchshield.serve.http import create_app
    from torchshield.serve.service import ServeConfig, Service

    svc = Service.start(ServeConfig(db_url=f"sqlite:///{tmp / f'small-{limit}.db'}",
                                    bundles=(str(tmp / "stolen.tsb"),), body_limit=limit, rate_per_s=1000,
                                    burst=1000, allow_unsigned=True), master=generate_master_key())
    return svc, svc.keys.create(role="predictor").token, create_app(svc)


def test_verify_endpoint_present_absent_and_refused(served, capsys):
    from torchshield.cli.app import run

    url, token, tmp = served
    base = ["model", "watermark", "verify", "--endpoint", url, "--record", str(tmp / "mark.json"),
            "--key-file", str(tmp / "owner.key"), "--json"]
    assert run([*base, "--model", "stolen", "--api-key", token]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["present"] and doc["p_value"] < 1e-6 and doc["total"] == 50
    # smaller requests (a server with a small body limit, image triggers): the same verdict
    assert run([*base, "--model", "stolen", "--api-key", token, "--batch-size", "7"]) == 0
    assert json.loads(capsys.readouterr().out) == doc
    assert run([*base, "--model", "independent", "--api-key", token]) == 1
    assert json.loads(capsys.readouterr().out)["p_value"] > 1e-3
    assert run([*base, "--model", "stolen", "--api-key", "tsk_not_a_key"]) == 2
    assert "refused the API key" in capsys.readouterr().err
    assert run([*base, "--model", "nope", "--api-key", token]) == 2


def test_verify_endpoint_fits_requests_under_the_body_limit(served, capsys):
    """A server that refuses the default 50-input request (413) still gets verified: requests are
    halved until they pass, with the same verdict; an input too large on its own is a clear exit 2."""
    from torchshield.cli.app import run

    url, token, tmp = served
    base = ["model", "watermark", "verify", "--record", str(tmp / "mark.json"), "--key-file",
            str(tmp / "owner.key"), "--json", "--model", "stolen"]
    assert run([*base, "--endpoint", url, "--api-key", token]) == 0
    reference = json.loads(capsys.readouterr().out)
    one_input = len(json.dumps({"inputs": [[0.123456789012345678] * 64]}))
    svc, small_token, app = _small_server(tmp, 4 * one_input)  # about 4 inputs per request, not 50
    try:
        with running(app) as small:
            # the default request of 50 inputs is refused by this server ...
            refused = httpx.post(f"{small}/v1/models/stolen/predict", json={"inputs": [[0.5] * 64] * 50},
                                 headers={"Authorization": f"Bearer {small_token}"})
            assert refused.status_code == 413
            # ... and the verification still runs, with the same verdict
            assert run([*base, "--endpoint", small, "--api-key", small_token]) == 0
            assert json.loads(capsys.readouterr().out) == reference
    finally:
        svc.close()
    svc, small_token, app = _small_server(tmp, one_input // 4)  # not even one input fits
    try:
        with running(app) as small:
            assert run([*base, "--endpoint", small, "--api-key", small_token]) == 2
            err = capsys.readouterr().err
            assert "refuses even one trigger input as too large (HTTP 413)" in err and "--body-limit" in err
            assert small_token not in err
    finally:
        svc.close()
