"""`torchshield serve`: the secure inference service over HTTP (see docs/serving.md)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from torchshield.cli.output import err_console
from torchshield.errors import InputError

DEFAULT_DB = "sqlite:///shield.db"
log = logging.getLogger("torchshield.serve")


def register(root: typer.Typer) -> None:
    root.command("serve")(serve)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    bundles: list[Path] = typer.Argument(..., help="Model bundles (.tsb) to serve; encrypted ones need the key."),
    db: str = typer.Option(os.environ.get("TORCHSHIELD_DB", DEFAULT_DB), "--db",
                           help="SQLAlchemy URL: sqlite:///shield.db (default) or postgresql+psycopg://..."),
    key_file: Path | None = typer.Option(None, "--key-file", help="Master key file (else $TORCHSHIELD_KEY[_FILE])."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; only loopback unless you say so."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="uvicorn worker processes."),
    rate: float = typer.Option(50.0, "--rate", help="Default requests/second per key (keys may override)."),
    burst: int = typer.Option(100, "--burst", help="Default bucket size per key."),
    rate_store: str = typer.Option("memory", "--rate-limit-store",
                                   help="memory: per worker (fast); db: shared by all workers."),
    output: str | None = typer.Option(None, "--output", help="Force output hardening for every model: "
                                                            "label, top_k or probabilities."),
    body_limit: int = typer.Option(1 << 20, "--body-limit", help="Largest request body in bytes (else 413)."),
    trust: list[Path] = typer.Option([], "--trust", help="Public key (.pub) of a signer whose bundles are "
                                                        "served (repeat); others are refused."),
    allow_unsigned: bool = typer.Option(False, "--allow-unsigned",
                                        help="DANGEROUS: serve bundles that are unsigned or signed by a key "
                                             "not given with --trust (logged at every load)."),
    loop_budget_ms: float = typer.Option(0.5, "--loop-budget-ms", min=0.0,
                                         help="Run a predict on the event loop when its model answers a body "
                                              "that size within this time (measured at start); 0: always "
                                              "on a worker thread."),
    batching: bool = typer.Option(True, "--batching/--no-batching",
                                  help="Let concurrent requests for one model share a forward pass (each keeps "
                                       "its own checks and audit record); --no-batching: one forward per "
                                       "request."),
    privacy_policy: list[str] = typer.Option([], "--privacy-policy",
                                             help="Privacy-gateway policy (data mask format + gateway section): "
                                                  "de-identify text predict/generate inputs, scan answers for "
                                                  "leaks. FILE applies to every text model, MODEL=FILE to one "
                                                  "model (repeatable; a model's own policy wins)."),
) -> None:
    """Serve BUNDLES over HTTP with API keys, RBAC, rate limits and a hash-chained audit log."""
    import uvicorn

    from torchshield.crypto.keys import resolve_master_key
    from torchshield.serve.http.worker import CONFIG_ENV, WORKER_KEY_ENV, worker_key_env
    from torchshield.serve.service import ServeConfig, Service

    if rate_store not in ("memory", "db"):
        raise InputError("--rate-limit-store must be memory or db")
    if (tls_cert is None) != (tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    policies = _privacy_policies(privacy_policy)
    for p in [*bundles, *trust, *(x for x in (tls_cert, tls_key) if x), *map(Path, policies.values())]:
        if not p.is_file():
            raise InputError(f"{p}: no such file")
    from torchshield.serve.models import TrustPolicy

    policy = TrustPolicy.from_files([str(t) for t in trust], allow_unsigned=allow_unsigned)
    if allow_unsigned:
        err_console.print("[bold red]WARNING: --allow-unsigned:[/] bundles are served whoever made them; "
                          f"trusted signers: {policy.describe()}", highlight=False)
    elif not trust:
        raise InputError("--trust: name the public key (.pub) of the signer whose bundles may be served",
                         hint="e.g. --trust signer.pub (repeat for several); or --allow-unsigned to serve "
                              "unverified bundles")
    if not _is_loopback(host):
        err_console.print(f"[bold yellow]WARNING:[/] binding {host}: the service is reachable from other "
                          "machines" + ("" if tls_cert else " over plain HTTP (API keys travel in clear; "
                                                             "use --tls-cert/--tls-key)"), highlight=False)
    config = ServeConfig(db_url=db, bundles=tuple(str(b) for b in bundles),
                         key_file=str(key_file) if key_file else None, body_limit=body_limit, rate_per_s=rate,
                         burst=burst, rate_store=rate_store, output=output, loop_budget_ms=loop_budget_ms,
                         batching=batching, trusted_signers=tuple(str(t) for t in trust), allow_unsigned=allow_unsigned,
                         privacy_policies=policies)
    if policies:  # a malformed policy: exit 2 naming the field, before anything starts
        from torchshield.gateway.policy import load_gateway_policy

        for file in policies.values():
            load_gateway_policy(file)
    tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert else {}
    master = resolve_master_key(key_file=key_file)  # fail fast, with clear errors, before any worker starts
    scheme = "https" if tls_cert else "http"
    if workers == 1:
        from torchshield.serve.http.app import create_app

        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if given:  # one worker needs no shared metrics, but an operator's folder starts empty too
            from torchshield.serve.metrics import prepare_multiprocess_dir

            prepare_multiprocess_dir(given)
        service = Service.start(config, master=master)
        _reload_on_hangup(service)
        _announce(service.keys.count(), service.registry.names(), f"{scheme}://{host}:{port}", workers, db)
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning", **tls)
        service.close()
        return
    # Several workers: each loads the bundles itself; here only the database and the bundle headers
    # are checked, so start-up does not pay for the models once more in this parent process.
    from torchshield.model.bundle import inspect as inspect_bundle
    from torchshield.serve.access.keys import KeyStore
    from torchshield.serve.db import open_database

    for b in bundles:  # the signer named by each header must be trusted; each worker verifies the signature
        info = inspect_bundle(b)
        policy.verifier(b, info.signed, info.signer)
    database = open_database(db)
    _announce(KeyStore(database, master).count(), [b.name for b in bundles], f"{scheme}://{host}:{port}",
              workers, db)
    database.dispose()
    os.environ[CONFIG_ENV] = json.dumps(config.to_dict())
    os.environ[WORKER_KEY_ENV] = worker_key_env(master)  # resolved once above; each worker pops it
    try:
        with _multiprocess_metrics():
            uvicorn.run("torchshield.serve.http.worker:app_from_env", factory=True, workers=workers, host=host,
                        port=port, log_level="warning", **tls)
    finally:
        os.environ.pop(WORKER_KEY_ENV, None)



def _privacy_policies(entries: list[str]) -> dict[str, str]:
    """``--privacy-policy`` entries as {model name or "*": policy file}: ``FILE`` for every text model,
    ``MODEL=FILE`` for one (an entry naming an existing file is always a file)."""
    import re

    out: dict[str, str] = {}
    for entry in entries:
        name, sep, file = entry.partition("=")
        if not sep or Path(entry).is_file() or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            name, file = "*", entry
        if name in out:
            which = "every model" if name == "*" else f"model {name!r}"
            raise InputError(f"--privacy-policy: two policies for {which}",
                             hint="give one FILE for all text models and at most one MODEL=FILE per model")
        out[name] = file
    return out

@contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """Several workers share one set of metrics through prometheus_client's multiprocess mode:
    PROMETHEUS_MULTIPROC_DIR (the operator's, or a private temporary folder removed at exit),
    emptied now so that the counters start at zero; the workers inherit it."""
    import shutil
    import tempfile

    from torchshield.serve.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    given = os.environ.get(MULTIPROC_ENV)
    folder = given or tempfile.mkdtemp(prefix="torchshield-metrics-")
    prepare_multiprocess_dir(folder)
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)


def _reload_on_hangup(service: object) -> None:
    """SIGHUP (one worker): load and verify the bundles again, on a thread; a bundle that is not
    trusted any more is refused and the models served until then stay. With --workers N, uvicorn's
    supervisor answers SIGHUP by restarting the workers, each of which verifies at start."""
    import signal
    import threading

    def reload() -> None:
        try:
            service.reload_models()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - keep serving what was verified before
            log.error("reload refused, still serving the previous models: %s", getattr(exc, "message", exc))

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload, name="torchshield-reload").start())


def _announce(n_keys: int, names: list[str], url: str, workers: int, db: str) -> None:
    if n_keys == 0:
        err_console.print(f"no API keys yet: create the first admin key with `torchshield access bootstrap --db {db}`",
                          highlight=False)
    err_console.print(f"serving {', '.join(names)} on {url} ({workers} worker{'s' if workers > 1 else ''})",
                      highlight=False)
