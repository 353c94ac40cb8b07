"""Test PKI for a Flower deployment: a CA, a SuperLink TLS certificate, SuperNode auth keys.

What each piece protects: TLS (server certificate signed by our CA, verified by SuperNodes
and the ``flwr`` CLI through ``--root-certificates``) stops eavesdropping and a fake
SuperLink; node authentication (an ECDSA P-384 key pair per SuperNode, its public key
registered at the SuperLink) stops an unknown machine from joining the federation and
receiving the model. The files are for testing and drills; a production federation uses its
organisation's CA. Private keys are written 0600 and never printed.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from torchshield.atomic import atomic_output
from torchshield.errors import InputError

__all__ = ["DeploymentCerts", "make_test_certs"]


@dataclass(frozen=True)
class DeploymentCerts:
    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[Path, ...]  # OpenSSH private keys
    node_public_keys: tuple[Path, ...]  # OpenSSH public keys

    @classmethod
    def at(cls, directory: str | Path, nodes: int | None = None) -> DeploymentCerts:
        d = Path(directory).resolve()  # Flower processes run in another working directory
        if nodes is None:
            nodes = len(list(d.glob("supernode-*.pub")))
        certs = cls(d, d / "ca.crt", d / "server.pem", d / "server.key",
                    tuple(d / f"supernode-{i}" for i in range(nodes)),
                    tuple(d / f"supernode-{i}.pub" for i in range(nodes)))
        missing = [p for p in (certs.ca_cert, certs.server_cert, certs.server_key, *certs.node_keys) if not p.exists()]
        if missing or nodes == 0:
            raise InputError(f"{d}: certificate files missing ({', '.join(p.name for p in missing) or 'no nodes'})",
                             hint=f"create them with: torchshield fl certs {d} --nodes N")
        return certs


def make_test_certs(directory: str | Path, *, nodes: int, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                    days: int = 30, overwrite: bool = False) -> DeploymentCerts:
    """Write a CA, a SuperLink certificate for ``hosts`` and ``nodes`` SuperNode key pairs."""
    if nodes < 1:
        raise InputError(f"--nodes must be >= 1, got {nodes}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if (d / "ca.crt").exists() and not overwrite:
        raise InputError(f"{d}: already holds certificates", hint="choose another directory or pass --overwrite")
    now = _dt.datetime.now(_dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "torchshield federation test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
          .not_valid_after(now + _dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
              .add_extension(x509.SubjectAlternativeName(sans), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA384()))
    pem = serialization.Encoding.PEM
    _write(d / "ca.crt", ca.public_bytes(pem), 0o644)
    _write(d / "server.pem", server.public_bytes(pem), 0o644)
    _write(d / "server.key", server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), 0o600)
    # The CA key is not kept: these certificates are for one test federation, nothing is re-issued.
    for i in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        _write(d / f"supernode-{i}", key.private_bytes(pem, serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()), 0o600)
        _write(d / f"supernode-{i}.pub", key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n", 0o644)
    return DeploymentCerts.at(d, nodes)


def _write(path: Path, data: bytes, mode: int) -> None:
    with atomic_output(path, mode=mode, overwrite=True) as f:
        f.write(data)
