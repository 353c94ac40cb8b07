"""`torchshield fl`: federated learning on Flower (simulate, certs, deploy, superlink, supernode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, err_console, progress

__all__ = ["register"]

fl_app = typer.Typer(no_args_is_help=True, help="Federated learning on Flower: simulation and deployment.")


def _load(config: Path, out: Path | None, sign_with: Path | None, rounds: int | None,
          clients: int | None) -> tuple[dict[str, Any], Any]:
    import yaml

    from torchshield.federated.config import load_config, parse_config

    load_config(config)  # validates and gives file-level errors
    raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    if out is not None or sign_with is not None:
        raw["output"] = {**(raw.get("output") or {}), **({"dir": str(out)} if out else {}),
                         **({"sign_with": str(sign_with)} if sign_with else {})}
    if rounds is not None:
        raw["rounds"] = rounds
    if clients is not None:
        raw["clients"] = clients
    return raw, parse_config(raw, source=str(config))


def _summary(result_doc: dict[str, Any], outputs: dict[str, str]) -> dict[str, Any]:
    return {**result_doc, "outputs": outputs}


def _render(doc: dict[str, Any]) -> Any:
    def human(console: Any) -> None:
        for r in doc["rounds"]:
            if "clients" in r:
                losses = ", ".join(f"{c['partition_id']}:{c['loss']:.3f}" for c in r["clients"]
                                   if c["loss"] is not None)
                who = f"client losses [{losses}]"
            else:  # client-level DP: who took part and their losses stay private
                who = f"{r['clients_aggregated']} updates aggregated"
            console.print(f"round {r['round']:>3}  {r['seconds']:7.2f} s  test acc {r['test_accuracy']:.4f}  {who}")
        console.print(f"final test accuracy: {doc['final_accuracy']:.4f}")
        if doc.get("privacy"):
            p = doc["privacy"]
            console.print(f"client-level DP: epsilon {p['epsilon']:.3f} at delta {p['delta']} "
                          f"(noise {p['noise_multiplier']:.3f}, clip {p['clipping_norm']}; neighbouring: "
                          f"{p['neighbouring']}; sampling: {p['sampling']})", markup=False)
        for name, path in doc.get("outputs", {}).items():
            console.print(f"{name}: {path}")

    return human


# --sign as on every other command that writes a bundle; --sign-with (the config key's name) kept
SIGN = typer.Option(None, "--sign", "--sign-with", help="Ed25519 signing key file: sign the model bundle written "
                    "(overrides output.sign_with).")


@fl_app.command("simulate")
def simulate_cmd(
    config: Path = typer.Argument(..., help="The federation's fl.yaml."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (overrides output.dir)."),
    sign_with: Path | None = SIGN,
    rounds: int | None = typer.Option(None, "--rounds", help="Override rounds."),
    clients: int | None = typer.Option(None, "--clients", help="Override clients."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Flower's and Ray's logs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the federation on this machine with Flower's simulation engine."""
    from torchshield.federated.outputs import metrics_document
    from torchshield.federated.simulate import simulate

    _, cfg = _load(config, out, sign_with, rounds, clients)
    with progress("federated rounds", total=cfg.rounds) as advance:
        def on_round(row: dict[str, Any]) -> None:
            advance(1)
            if not as_json:
                err_console.print(f"round {row['round']}: test accuracy {row['test_accuracy']:.4f} "
                                  f"({row['seconds']:.2f} s)", highlight=False)

        result = simulate(cfg, on_round=on_round, verbose=verbose)
    doc = _summary(metrics_document(result), result.outputs)
    emit(doc, _render(doc), as_json=as_json)


@fl_app.command("certs")
def certs_cmd(
    directory: Path = typer.Argument(..., help="Directory for the CA, SuperLink certificate and SuperNode keys."),
    nodes: int = typer.Option(3, "--nodes", help="Number of SuperNode key pairs."),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", help="SuperLink host names / IPs (SANs)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make TEST certificates: a CA, a SuperLink TLS certificate and SuperNode auth keys."""
    from torchshield.federated.certs import make_test_certs

    c = make_test_certs(directory, nodes=nodes, hosts=tuple(host), overwrite=overwrite)
    doc = {"directory": c.directory, "ca_cert": c.ca_cert, "server_cert": c.server_cert,
           "server_key": c.server_key, "node_keys": list(c.node_keys), "node_public_keys": list(c.node_public_keys)}
    emit(doc, lambda con: con.print(f"wrote test CA, SuperLink certificate and {nodes} SuperNode key pairs "
                                    f"to {c.directory} (private keys 0600)"), as_json=as_json)


@fl_app.command("deploy")
def deploy_cmd(
    config: Path = typer.Argument(..., help="The federation's fl.yaml."),
    certs: Path | None = typer.Option(None, "--certs", help="Directory made by `torchshield fl certs`."),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS and no node auth (loopback drills only)."),
    work_dir: Path = typer.Option(Path("fl-deploy"), "--work-dir", help="Logs, Flower state and the app."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (overrides output.dir)."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds before the run is abandoned."),
    sign_with: Path | None = SIGN,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the federation on Flower's deployment engine on this host: a SuperLink and one
    SuperNode per client, as separate processes, all stopped when the command ends."""
    from torchshield.errors import InputError
    from torchshield.federated.certs import DeploymentCerts
    from torchshield.federated.deploy import LocalDeployment

    raw, cfg = _load(config, out, sign_with, None, None)
    if certs is None and not insecure:
        raise InputError("deploy needs --certs DIR (TLS and node authentication)",
                         hint="make test ones with `torchshield fl certs DIR`, or pass --insecure for a drill")
    bundle = None if insecure else DeploymentCerts.at(certs, cfg.clients) if certs else None
    with LocalDeployment(work_dir.resolve(), cfg.clients, bundle) as dep:
        if not as_json:
            err_console.print(f"federation ready at {dep.address} ({cfg.clients} SuperNodes, "
                              f"{'TLS + node auth' if bundle else 'INSECURE'}) in "
                              f"{dep.timings['federation_ready_s']:.1f} s")
        doc = dep.run(raw, timeout=timeout)
        doc["timings"] = dict(dep.timings)
    emit(doc, _render(doc), as_json=as_json)


@fl_app.command("superlink")
def superlink_cmd(
    certs: Path = typer.Option(..., "--certs", help="Directory made by `torchshield fl certs`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (127.0.0.1 unless you mean to expose it)."),
    port: int = typer.Option(9092, "--port", help="Port of the SuperLink's HTTP APIs."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the Flower command instead of running it."),
) -> None:
    """Start a SuperLink with TLS and node authentication (foreground; Ctrl-C stops it and its children)."""
    from torchshield.federated.certs import DeploymentCerts
    from torchshield.federated.deploy import flower_env, superlink_command, supervise
    from torchshield.federated.simulate import prepare_flower_env

    cmd = superlink_command(DeploymentCerts.at(certs), host=host, port=port)
    if dry_run:
        typer.echo(" ".join(cmd))
        return
    raise typer.Exit(supervise(cmd, env=flower_env(prepare_flower_env())))


@fl_app.command("supernode")
def supernode_cmd(
    ca_cert: Path = typer.Option(..., "--ca-cert", help="CA certificate that signed the SuperLink's certificate."),
    key: Path = typer.Option(..., "--key", help="This node's auth private key (OpenSSH format, from `fl certs`)."),
    superlink: str = typer.Option(..., "--superlink", help="SuperLink address host:port."),
    partition_id: int = typer.Option(..., "--partition-id", help="This client's partition (its key index)."),
    num_partitions: int = typer.Option(..., "--num-partitions", help="Number of clients in the federation."),
    port: int = typer.Option(9094, "--port", help="Local port for this node's ClientApps (127.0.0.1)."),
    max_wait: float = typer.Option(60.0, "--max-wait", help="Give up if the SuperLink is unreachable this long."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the Flower command instead of running it."),
) -> None:
    """Start a SuperNode that verifies the SuperLink's certificate and authenticates with its key."""
    from torchshield.errors import InputError
    from torchshield.federated.deploy import flower_env, supernode_command, supervise
    from torchshield.federated.simulate import prepare_flower_env

    for p in (ca_cert, key):
        if not p.is_file():
            raise InputError(f"{p}: no such file", hint="make test material with `torchshield fl certs DIR`")
    cmd = supernode_command(ca_cert, key, superlink=superlink,
                            partition_id=partition_id, num_partitions=num_partitions, port=port, max_wait=max_wait)
    if dry_run:
        typer.echo(" ".join(cmd))
        return
    raise typer.Exit(supervise(cmd, env=flower_env(prepare_flower_env())))


def register(root: typer.Typer) -> None:
    root.add_typer(fl_app, name="fl", help="Federated learning on Flower: simulation and deployment.")
