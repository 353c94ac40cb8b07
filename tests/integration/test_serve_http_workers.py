"""`torchshield serve` as a real process: several uvicorn workers under concurrent load (no 5xx,
one audit record per request, revocation seen by every worker), and a SIGKILL mid-load losing
no acknowledged request's audit record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_harness import free_port, make_bundle, stop_group

CLI = [str(Path(sys.executable).parent / "torchshield")]
X = [[3.0] * 8]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def setup(tmp_path, key_file, master_key):
    from torchshield.crypto.keys import read_key_file

    bundle = make_bundle(tmp_path / "digits.tsb", read_key_file(key_file))
    db = f"sqlite:///{tmp_path / 'shield.db'}"
    boot = _cli("access", "bootstrap", "--db", db, "--key-file", str(key_file), "--json")
    assert boot.returncode == 0, boot.stderr
    return bundle, db, key_file, json.loads(boot.stdout)["token"]


def _start(bundle: Path, db: str, key_file: Path, workers: int, env: dict | None = None
           ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", str(bundle), "--db", db, "--key-file", str(key_file), "--port", str(port),
                             "--workers", str(workers), "--rate", "10000", "--burst", "10000",
                             "--trust", str(bundle.parent / "signer.pub")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("server did not start")


def _load(url: str, token: str, clients: int, per_client: int, stop: threading.Event | None = None,
          statuses: list[int] | None = None) -> list[int]:
    statuses = [] if statuses is None else statuses
    hdr = {"Authorization": f"Bearer {token}"}

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30, headers=hdr) as c:
            for _ in range(per_client):
                if stop is not None and stop.is_set():
                    return
                try:
                    statuses.append(c.post("/v1/models/digits/predict", json={"inputs": X}).status_code)
                except httpx.HTTPError:
                    return  # the server was killed under us
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_two_workers_under_load_and_revocation(setup):
    bundle, db, key_file, admin = setup
    proc, url = _start(bundle, db, key_file, workers=2)
    try:
        statuses = _load(url, admin, clients=16, per_client=10)
        assert len(statuses) == 160 and all(s == 200 for s in statuses)
        hdr = {"Authorization": f"Bearer {admin}"}
        new = httpx.post(f"{url}/v1/keys", headers=hdr, json={"role": "predictor", "models": ["digits"]}).json()
        assert set(_load(url, new["token"], clients=4, per_client=5)) == {200}
        revoked = _cli("access", "revoke", new["key"]["key_id"], "--db", db, "--key-file", str(key_file))
        assert revoked.returncode == 0
        assert set(_load(url, new["token"], clients=4, per_client=5)) == {401}  # in every worker at once
    finally:
        stop_group(proc)
    verify = _cli("audit", "verify", "--db", db, "--key-file", str(key_file), "--json")
    assert verify.returncode == 0, verify.stdout
    records = json.loads(_cli("audit", "export", "--db", db, "--key-file", str(key_file), "--json").stdout)["records"]
    requests = [r for r in records if r["action"] != "monitor.alert"]  # the same input 160 times raises alerts
    assert len(requests) == 160 + 1 + 20 + 20 and json.loads(verify.stdout)["records"] == len(records)
    assert [r["status"] for r in requests].count(401) == 20


def _sample(text: str, line_start: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    assert len(values) == 1, (line_start, text)
    return values[0]


def _per_worker_predictions(folder: Path) -> dict[str, float]:
    """What each worker process counted, read from its own multiprocess file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    out = {}
    for f in folder.glob("counter_*.db"):
        samples = [s for m in MultiProcessCollector.merge([str(f)], accumulate=True) for s in m.samples
                   if s.name == "torchshield_predictions_total"]
        out[f.stem] = sum(s.value for s in samples)
    return out


def test_metrics_are_totals_of_every_worker(setup, tmp_path):
    """Issue 17, finding 8: behind one port a scrape reaches either worker; every scrape must
    show the totals of both (prometheus_client's multiprocess mode), never one worker's share.
    Load goes on (fresh connections) until both workers have answered some of it; a stale file
    left in the metrics folder by an earlier run is removed at start."""
    bundle, db, key_file, admin = setup
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"stale: an earlier run's counters")
    proc, url = _start(bundle, db, key_file, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    hdr = {"Authorization": f"Bearer {admin}"}
    fresh = httpx.Limits(max_keepalive_connections=0)
    sent, scrapes = 0, []
    try:
        def client() -> None:
            with httpx.Client(base_url=url, timeout=30, headers=hdr, limits=fresh) as c:
                for _ in range(10):
                    assert c.post("/v1/models/digits/predict", json={"inputs": X}).status_code == 200

        for _ in range(30):
            threads = [threading.Thread(target=client) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent += 80
            per_worker = _per_worker_predictions(folder)
            if sum(v > 0 for v in per_worker.values()) >= 2:
                break
        assert sum(v > 0 for v in per_worker.values()) == 2 and sum(per_worker.values()) == sent, per_worker
        with httpx.Client(base_url=url, timeout=30, headers=hdr, limits=fresh) as c:
            for _ in range(12):
                r = c.get("/metrics")
                assert r.status_code == 200
                scrapes.append(r.text)
    finally:
        stop_group(proc)
    for text in scrapes:  # whichever worker answered, the totals of both
        assert _sample(text, 'torchshield_predictions_total{model="digits"}') == sent
        assert _sample(text, 'torchshield_requests_total{route="/v1/models/{name}/predict",status="200"}') == sent
        assert _sample(text, "torchshield_request_seconds_count") >= sent
        assert "key_id" not in text  # bounded labels: nothing per API key
    # each scrape counts the ones before it, whichever worker answered them
    seen = [_sample(t, 'torchshield_requests_total{route="/metrics",status="200"}') if 'route="/metrics"' in t
            else 0.0 for t in scrapes]
    assert seen == [float(i) for i in range(12)]


def test_sigkill_loses_no_acknowledged_record(setup):
    bundle, db, key_file, admin = setup
    proc, url = _start(bundle, db, key_file, workers=1)
    stop = threading.Event()
    acked: list[int] = []
    loader = threading.Thread(target=_load, args=(url, admin, 8, 10_000, stop, acked))
    loader.start()
    while len(acked) < 1 and loader.is_alive():
        time.sleep(0.3)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    loader.join()
    verify = _cli("audit", "verify", "--db", db, "--key-file", str(key_file), "--json")
    report = json.loads(verify.stdout)
    assert verify.returncode == 0 and report["ok"]
    assert acked.count(200) == len(acked) > 0 and report["records"] >= len(acked)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls(setup, tmp_path):
    bundle, db, key_file, admin = setup
    cert, key = _self_signed(tmp_path)
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", str(bundle), "--db", db, "--key-file", str(key_file), "--port", str(port),
                             "--tls-cert", str(cert), "--tls-key", str(key), "--trust", str(bundle.parent / "signer.pub")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                r = httpx.post(f"{url}/v1/models/digits/predict", json={"inputs": X}, verify=str(cert), timeout=2,
                               headers={"Authorization": f"Bearer {admin}"})
                break
            except httpx.ConnectError:
                assert time.time() < deadline and proc.poll() is None, "TLS server did not start"
                time.sleep(0.3)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).raise_for_status()
    finally:
        stop_group(proc)
