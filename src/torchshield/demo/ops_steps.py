"""Operations steps: serve the protected bundle on loopback and call it as allowed and refused
callers, verify the audit chain, back the artifacts up and restore them, write the report."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from torchshield.demo.model_steps import MODEL_NAME
from torchshield.demo.state import DemoState

__all__ = ["audit_chain", "backup_restore", "report", "serve"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_uvicorn(app: Any) -> tuple[str, Any]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="demo-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the demo server did not start on 127.0.0.1")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop


def serve(state: DemoState) -> str:
    import httpx
    import pandas as pd

    from torchshield.crypto.keys import read_key_file
    from torchshield.demo.data_steps import FEATURES
    from torchshield.serve import ServeConfig, Service
    from torchshield.serve.http import create_app

    model, key_path, test, pubkey = state.need("model", "master_key", "test", "pubkey")
    # The refused calls below are deliberate; the audit log records them, so Casbin's per-denial
    # warnings would only clutter the demo's progress output.
    logging.getLogger("casbin").setLevel(logging.ERROR)
    master = read_key_file(key_path)
    cfg = ServeConfig(
        db_url=f"sqlite:///{state.path('serve_db', 'serve/serve.db')}",
        bundles=(str(model),),
        trusted_signers=(str(pubkey),),  # the owner's signer: the service serves only what it signed
        rate_per_s=5.0,
        burst=20,
    )
    service = Service.start(cfg, master=master)
    state.cleanups.append(service.close)
    tokens = {
        role: service.keys.create(role=role, models=models, name=f"demo-{role}").token
        for role, models in (("admin", ["*"]), ("auditor", ["*"]), ("predictor", [MODEL_NAME]))
    }
    other = service.keys.create(role="predictor", models=["another-model"], name="demo-other").token
    url, stop = _start_uvicorn(create_app(service))
    state.cleanups.insert(0, stop)
    state.live.update(url=url, service=service, auditor_token=tokens["auditor"])
    rows = pd.read_parquet(test)[FEATURES].head(4)
    body = {"inputs": _normalised(state, rows)}
    calls: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=10) as c:

        def call(label: str, token: str | None, payload: Any = body, name: str = MODEL_NAME) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            status = c.post(f"/v1/models/{name}/predict", json=payload, headers=headers).status_code
            calls[label] = status
            return status

        call("predictor, own model", tokens["predictor"])
        call("no API key", None)
        call("predictor of another model", other)
        call("malformed input", tokens["predictor"], {"inputs": [[1.0, 2.0]]})
        statuses = [call("burst", tokens["predictor"]) for _ in range(40)]
        calls["burst"] = 429 if 429 in statuses else statuses[-1]
    state.facts["serve_calls"] = calls
    ok = calls["predictor, own model"] == 200
    if not ok:
        raise RuntimeError(f"the allowed call was refused ({calls['predictor, own model']})")
    return "; ".join(f"{k}: {v}" for k, v in calls.items())


def _normalised(state: DemoState, rows: Any) -> list[list[float]]:
    """Preprocess raw rows as training did (the served model takes normalised features)."""
    import numpy as np

    from torchshield.model.bundle import inspect

    norm = inspect(state.files["model"]).manifest["metadata"]["data"]["normalization"]
    x = (rows.to_numpy(dtype=np.float64) - np.asarray(norm["shift"])) / np.asarray(norm["scale"])
    return x.round(4).tolist()


def audit_chain(state: DemoState) -> str:
    import httpx

    url, token = state.live.get("url"), state.live.get("auditor_token")
    service = state.live.get("service")
    if url is None or service is None:
        from torchshield.demo.state import StepSkipped

        raise StepSkipped("the service did not start")
    deadline = time.monotonic() + 5
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:  # audit records are written by a background writer
        doc = httpx.get(
            f"{url}/v1/audit/verify", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        if doc.get("records", 0) >= 4:
            break
        time.sleep(0.1)
    state.facts["audit"] = {k: doc.get(k) for k in ("ok", "records")}
    if not doc.get("ok"):
        raise RuntimeError(f"the audit chain does not verify: {doc.get('reason')}")
    return f"hash chain of {doc.get('records')} audit records verifies"


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def backup_restore(state: DemoState) -> str:
    from torchshield import store
    from torchshield.crypto.keys import read_key_file

    model, key_path, train, released = state.need("model", "master_key", "train", "released")
    master = read_key_file(key_path)
    repo = store.Repository.init(state.out / "vault", master)
    items = {"readmission-model": model, "train-data": train, "released-data": released}
    for name, path in items.items():
        store.put_file(repo, path, name=name, tag="demo")
    result = store.backup(state.out / "vault", state.out / "backup")
    check = store.verify(store.Repository.open(state.out / "backup", master))
    restored_dir = state.out / "restored"
    restored = store.restore(
        store.Repository.open(state.out / "backup", master), "latest", restored_dir, overwrite=True
    )
    same = all(_digest(p) == _digest(items[snap.name]) for snap, p in restored)
    state.facts["backup"] = {"objects": len(items), "verified": check.ok, "restored_identical": same}
    if not (check.ok and same and len(restored) == len(items)):
        raise RuntimeError("the restored artifacts differ from the originals")
    return (
        f"{len(items)} artifacts stored encrypted, backed up ({result.chunks_copied} chunks), backup verified, "
        f"restored byte-identical"
    )


def report(state: DemoState) -> str:
    from torchshield.assess import AssessInputs, assess, write_report
    from torchshield.crypto.keys import read_key_file

    model, key_path, pub, train, test = state.need("model", "master_key", "pubkey", "train", "test")
    inputs = AssessInputs(
        model=model,
        data=test,
        train_data=train,
        key=read_key_file(key_path),
        pubkey=pub,
        endpoint=state.live.get("url"),
        api_key=state.live.get("auditor_token"),
        quick=state.quick,
    )
    result = assess(inputs)
    state.live["report"] = result
    paths = write_report(result, state.out / "report")
    state.files["report"] = paths["html"]
    state.facts["verdict"] = result.verdict
    return f"{result.verdict.upper()}: " + ", ".join(f"{s.id} {s.verdict}" for s in result.sections)
