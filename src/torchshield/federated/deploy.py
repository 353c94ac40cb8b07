"""Run the torchshield apps on Flower's deployment engine: one SuperLink, N SuperNodes.

On real machines each party starts its own process (``torchshield fl superlink`` /
``torchshield fl supernode`` print and run the exact Flower command). :class:`LocalDeployment`
starts a whole federation on one host (loopback drills, the integration test, the benchmark)
and supervises it so that a run is hermetic:

- TLS everywhere: the SuperLink serves its HTTP APIs with a certificate from our test CA,
  SuperNodes and the ``flwr`` CLI verify it (``--root-certificates``);
- node authentication: the SuperLink runs ``--enable-supernode-auth`` and only the public keys
  registered with ``flwr supernode register`` may join; each SuperNode signs with its key;
- no environment rebuilds: ``--disable-runtime-dependency-installation`` (``uv sync`` would
  reach the network and could pull a CUDA torch); the app is a 5-line FAB importing the
  installed torchshield, and the whole fl.yaml travels in the run config;
- no orphans: every process starts in its own session and is stopped as a process group
  (SIGTERM, then SIGKILL after a grace period), because a SuperNode's ``flower-superexec``
  children survive a SIGTERM to the SuperNode (seen with flwr 1.41); this happens on normal
  exit, on errors and on Ctrl-C;
- no hangs: every wait has a deadline and fails with a message naming what did not answer.

Threat model: the SuperLink operator and network are untrusted for confidentiality of
updates (use SecAgg+ for that); TLS and node auth keep outsiders from reading traffic or
joining. Loopback services (SuperNode runtime API for its own ClientApps) stay on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchshield.errors import InputError, ShieldError
from torchshield.federated.certs import DeploymentCerts

__all__ = ["LocalDeployment", "flower_env", "free_port", "superlink_command", "supernode_command", "supervise",
           "terminate", "wait_for_superlink", "write_app_dir"]

_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (parallel test workers each get their own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def superlink_command(certs: DeploymentCerts | None, *, host: str, port: int) -> list[str]:
    cmd = [str(_BIN / "flower-superlink"), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if certs is None:
        return [*cmd, "--insecure"]
    return [*cmd, "--ssl-ca-certfile", str(certs.ca_cert), "--ssl-certfile", str(certs.server_cert),
            "--ssl-keyfile", str(certs.server_key), "--enable-supernode-auth"]


def supernode_command(ca_cert: Path | None, node_key: Path | None, *, superlink: str, partition_id: int,
                      num_partitions: int, port: int, max_wait: float = 30.0) -> list[str]:
    """A SuperNode that verifies the SuperLink with ``ca_cert`` and signs in with ``node_key``."""
    cmd = [str(_BIN / "flower-supernode"), "--superlink", superlink, "--host", "127.0.0.1", "--port", str(port),
           "--node-config", f"partition-id={partition_id} num-partitions={num_partitions}",
           "--max-wait-time", str(max_wait)]
    if ca_cert is None or node_key is None:
        return [*cmd, "--insecure"]
    return [*cmd, "--root-certificates", str(ca_cert), "--auth-supernode-private-key", str(node_key)]


def wait_for_superlink(address: str, *, ca_cert: Path | None, timeout: float,
                       process: subprocess.Popen[bytes] | None = None) -> float:
    """Poll the SuperLink's ``/health`` until it answers; raise after ``timeout`` seconds, or at
    once if ``process`` (the SuperLink we started) has exited."""
    start = time.monotonic()
    scheme = "http" if ca_cert is None else "https"
    ctx = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert is not None else None
    last = "no answer"
    while time.monotonic() - start < timeout:
        if process is not None and process.poll() is not None:
            raise ShieldError(f"the SuperLink exited with code {process.returncode} before answering",
                              hint="see superlink.log in the work directory")
        try:
            with urllib.request.urlopen(f"{scheme}://{address}/health", timeout=2, context=ctx) as r:  # noqa: S310
                if r.status == 200:
                    return time.monotonic() - start
        except ssl.SSLCertVerificationError as exc:
            raise ShieldError(f"SuperLink at {address}: TLS certificate not trusted ({exc.verify_message})",
                              hint="pass the CA that signed the SuperLink certificate") from None
        except OSError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise InputError(f"SuperLink at {address} did not answer within {timeout:.0f} s ({last})",
                     hint="check that it runs and the address/port are right")


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower processes: state in ``flwr_home``, no telemetry, our venv's tools."""
    return {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def supervise(cmd: Sequence[str], *, env: dict[str, str]) -> int:
    """Run one Flower process in the foreground; on exit or Ctrl-C stop it and all it started."""
    proc = subprocess.Popen(list(cmd), env=env, start_new_session=True)
    try:
        return proc.wait()
    finally:
        terminate([proc])


@dataclass
class LocalDeployment:
    """A SuperLink and ``nodes`` SuperNodes on this host; use as a context manager."""

    work_dir: Path
    nodes: int
    certs: DeploymentCerts | None
    host: str = "127.0.0.1"
    port: int = 0
    start_timeout: float = 60.0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        self.flwr_home = self.work_dir / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True, mode=0o700)
        self.env = flower_env(self.flwr_home)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        self._spawn("superlink", superlink_command(self.certs, host=self.host, port=self.port))
        self.timings["superlink_ready_s"] = wait_for_superlink(
            self.address, ca_cert=self.certs.ca_cert if self.certs else None, timeout=self.start_timeout,
            process=self._procs[0])
        self._write_cli_config()
        if self.certs is not None:
            for pub in self.certs.node_public_keys[: self.nodes]:
                self._flwr(["supernode", "register", str(pub), "deploy"], timeout=60)
        for i in range(self.nodes):
            c = self.certs
            self._spawn(f"supernode-{i}", supernode_command(
                c.ca_cert if c else None, c.node_keys[i] if c else None, superlink=self.address, partition_id=i, num_partitions=self.nodes,
                port=free_port(), max_wait=self.start_timeout))
        self._wait_online(self.start_timeout)
        self.timings["federation_ready_s"] = time.monotonic() - t0

    def run(self, raw_config: dict[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
        """Submit one run of the torchshield apps and return its metrics document."""
        output = dict(raw_config.get("output") or {})
        output["dir"] = str(out_dir := Path(output.get("dir", self.work_dir / "output")).resolve())
        if output.get("sign_with"):  # the ServerApp runs in another directory: paths from here
            output["sign_with"] = str(Path(output["sign_with"]).resolve())
        raw = {**raw_config, "output": output}
        app = write_app_dir(self.work_dir / "app", raw)
        t0 = time.monotonic()
        proc = self._flwr(["run", str(app), "deploy", "--stream"], timeout=timeout)
        self.timings["run_s"] = time.monotonic() - t0
        metrics = out_dir / "metrics.json"
        if not metrics.exists():
            tail = "\n".join(proc.stdout.splitlines()[-15:])
            raise ShieldError(f"the deployed run wrote no metrics to {metrics}; last output:\n{tail}")
        return dict(json.loads(metrics.read_text()))

    def stop(self) -> None:
        """Stop every process this deployment started, and their descendants: SIGTERM, then SIGKILL.

        Flower detaches some children into new sessions (``flower-superexec`` starts
        ``flwr-serverapp`` with ``start_new_session``), so process groups alone miss them; we
        collect the descendants of our own processes by parent id first."""
        terminate(self._procs)
        self._procs.clear()

    def _spawn(self, name: str, cmd: Sequence[str]) -> None:
        log = open(self.work_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._procs.append(subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.work_dir, start_new_session=True))
        log.close()

    def _write_cli_config(self) -> None:
        lines = ["[superlink]", 'default = "deploy"', "", "[superlink.deploy]", f'address = "{self.address}"']
        lines.append(f'root-certificates = "{self.certs.ca_cert}"' if self.certs else "insecure = true")
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def _flwr(self, args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run([str(_BIN / "flwr"), *args], env=self.env, cwd=self.work_dir, capture_output=True,
                                  text=True, timeout=timeout, check=False, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise ShieldError(f"`flwr {args[0]} {args[1]}` did not finish within {timeout:.0f} s",
                              hint=f"see the logs in {self.work_dir}") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-8:])
            raise ShieldError(f"`flwr {args[0]} {args[1]}` failed (exit {proc.returncode}):\n{tail}")
        return proc

    def _wait_online(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        online = 0
        while time.monotonic() < deadline:
            dead = [p.args for p in self._procs if p.poll() is not None]
            if dead:
                raise ShieldError(f"a federation process exited early: {dead[0][0]}",
                                  hint=f"see the logs in {self.work_dir}")
            out = self._flwr(["supernode", "list", "deploy", "--format", "json"], timeout=30).stdout
            online = len(re.findall(r'"status":\s*"online"', out))
            if online >= self.nodes:
                return
            time.sleep(0.5)
        raise ShieldError(f"only {online} of {self.nodes} SuperNodes came online within {timeout:.0f} s",
                          hint=f"see the supernode logs in {self.work_dir}")


def write_app_dir(directory: Path, raw_config: dict[str, Any]) -> Path:
    """A minimal Flower app (FAB source) that runs the installed torchshield apps with ``raw_config``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tsfl_app.py").write_text(
        '"""Flower entry points: the installed torchshield apps (config comes in the run config)."""\n'
        "from torchshield.federated.client_app import build_client_app\n"
        "from torchshield.federated.server_app import build_server_app\n\n"
        "client_app = build_client_app()\nserver_app = build_server_app()\n")
    config_json = json.dumps(json.dumps(raw_config, sort_keys=True))  # a TOML basic string
    (directory / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "torchshield-fl"
version = "1.0.0"
description = "torchshield federated apps"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "torchshield"

[tool.flwr.app.components]
serverapp = "tsfl_app:server_app"
clientapp = "tsfl_app:client_app"

[tool.flwr.app.config]
torchshield-config = {config_json}
""")
    return directory


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # the group we created with start_new_session: only our processes
    except (ProcessLookupError, PermissionError):
        pass


def terminate(procs: Sequence[subprocess.Popen[bytes]], *, grace: float = 10.0) -> None:
    """Stop ``procs`` (each the leader of its own session) and all their descendants:
    SIGTERM, up to ``grace`` seconds to exit, then SIGKILL for whatever is left."""
    detached = _descendants([p.pid for p in procs])
    for p in reversed(procs):
        _signal_group(p, signal.SIGTERM)
    _signal_pids(detached, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in reversed(procs):
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(p, signal.SIGKILL)  # also reaches surviving flower-superexec children
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    _signal_pids(detached, signal.SIGKILL)


def _descendants(roots: list[int]) -> list[int]:
    """Pids of all live descendants of ``roots`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:  # re-check the pid still names a Flower process: pids can be reused after a wait
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"flwr" not in cmdline and b"flower" not in cmdline:
                continue
        except OSError:
            continue
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
