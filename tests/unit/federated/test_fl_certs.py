"""Test PKI: the SuperLink certificate chains to the CA and serves real TLS; node keys load as Flower expects."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from torchshield.cli.app import run
from torchshield.errors import InputError, ShieldError
from torchshield.federated.certs import DeploymentCerts, make_test_certs
from torchshield.federated.deploy import free_port, supernode_command, wait_for_superlink


def test_certs_chain_keys_and_modes(tmp_path) -> None:
    c = make_test_certs(tmp_path / "pki", nodes=2)
    ca = x509.load_pem_x509_certificate(c.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(c.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    for key, pub in zip(c.node_keys, c.node_public_keys, strict=True):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        private = load_ssh_private_key(key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert load_ssh_public_key(pub.read_bytes()).public_numbers() == private.public_key().public_numbers()
    assert stat.S_IMODE(c.server_key.stat().st_mode) == 0o600
    with pytest.raises(InputError, match="already holds certificates"):
        make_test_certs(tmp_path / "pki", nodes=2)
    with pytest.MonkeyPatch.context() as mp:  # Flower processes run elsewhere: paths must be absolute
        mp.chdir(tmp_path)
        assert DeploymentCerts.at("pki").ca_cert == c.ca_cert.resolve() and c.ca_cert.is_absolute()
    with pytest.raises(InputError, match="certificate files missing"):
        DeploymentCerts.at(tmp_path / "nowhere", 1)


def test_tls_handshake_with_generated_certs(tmp_path) -> None:
    c = make_test_certs(tmp_path, nodes=1)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(c.server_cert, c.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client_ctx = ssl.create_default_context(cafile=str(c.ca_cert))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.recv(2) == b"ok"
    t.join(5)
    listener.close()
    other = make_test_certs(tmp_path / "other", nodes=1)  # a CA we did not trust must be refused
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context(cafile=str(other.ca_cert)).wrap_socket(
            socket.create_connection(("127.0.0.1", _serve_once(server_ctx))), server_hostname="127.0.0.1")


def _serve_once(ctx: ssl.SSLContext) -> int:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def test_unreachable_superlink_times_out_with_a_message(tmp_path) -> None:
    port = free_port()
    with pytest.raises(ShieldError, match=rf"SuperLink at 127.0.0.1:{port} did not answer within 1 s"):
        wait_for_superlink(f"127.0.0.1:{port}", ca_cert=None, timeout=1.0)


def test_cli_certs_and_dry_run_commands(tmp_path, capsys) -> None:
    assert run(["fl", "certs", str(tmp_path / "pki"), "--nodes", "2", "--json"]) == 0
    capsys.readouterr()
    assert run(["fl", "superlink", "--certs", str(tmp_path / "pki"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--enable-supernode-auth" in out and "--ssl-certfile" in out and "--insecure" not in out
    cmd = supernode_command(tmp_path / "pki" / "ca.crt", tmp_path / "pki" / "supernode-1", superlink="127.0.0.1:1",
                            partition_id=1, num_partitions=2, port=2)
    assert "--root-certificates" in cmd and "--auth-supernode-private-key" in cmd and "--insecure" not in cmd
    assert run(["fl", "supernode", "--ca-cert", str(tmp_path / "x.crt"), "--key", str(tmp_path / "k"),
                "--superlink", "127.0.0.1:1", "--partition-id", "0", "--num-partitions", "1"]) == 2
