"""Shared helpers for serving tests: a tiny model bundle, a service, a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ARCH = {"type": "mlp", "hidden": [16]}
META = {"name": "digits", "model": ARCH, "input": {"shape": [8], "dtype": "float32", "min": 0, "max": 16},
        "num_classes": 4}


def make_signer(folder: Path) -> tuple[Path, Path]:
    """A signing key pair in ``folder`` (made once): (private key file, public key file)."""
    from torchshield.crypto.signing import generate_signing_key

    priv, pub = folder / "signer.key", folder / "signer.pub"
    if not pub.exists():
        priv, pub = (Path(p) for p in generate_signing_key(folder / "signer"))
    return priv, pub


def make_bundle(path: Path, master: Any = None, *, name: str = "digits", seed: int = 0, sign: bool = True,
                sign_with: Any = None, **extra: Any) -> Path:
    """A tiny bundle, signed by the signer of its folder (``make_signer``) unless told otherwise."""
    import torch

    import torchshield
    from torchshield.nn.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(ARCH, in_shape=(8,), num_classes=4)
    signer = sign_with or (make_signer(path.parent)[0] if sign else None)
    torchshield.save(model, path, key=master, sign_with=signer, metadata={**META, "name": name, **extra})
    return path


def make_service(tmp: Path, master: Any, *, db_url: str | None = None, models: tuple[str, ...] = ("digits", "iris"),
                 **config: Any) -> Any:
    """A service over signed bundles of ``models``, trusting their signer."""
    from torchshield.serve.service import ServeConfig, Service

    bundles = tuple(str(make_bundle(tmp / f"{n}.tsb", master, name=n, seed=i)) for i, n in enumerate(models))
    config.setdefault("trusted_signers", (str(make_signer(tmp)[1]),))
    cfg = ServeConfig(db_url=db_url or f"sqlite:///{tmp / 'serve.db'}", bundles=bundles, **config)
    return Service.start(cfg, master=master)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app: Any) -> Any:
    """Serve ``app`` with a real uvicorn on a free loopback port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def stop_group(proc: Any) -> None:
    """Stop a server started with ``start_new_session=True`` and every process it forked
    (uvicorn's workers): SIGTERM to the group, SIGKILL if it is not gone within 20 s."""
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
