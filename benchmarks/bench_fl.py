"""Federated learning benchmark: torchshield on Flower's simulation engine vs plain Flower.

Same run, same machine, interleaving nothing heavier than needed (each variant is one Ray
simulation; Ray start-up is paid by every variant alike):

1. plain Flower ``run_simulation`` (legacy FedAvg, NumPyClient, same MLP/data/local training):
   the floor our wrapper is measured against;
2. torchshield FedAvg (IID), 3. torchshield SecAgg+ (5 shares, threshold 3),
4. torchshield client-level DP (clip 1, z 0.5), 5. torchshield FedAvg on Dirichlet(0.5) shards;
6. centralised training with the same epoch budget (rounds x local epochs) for the accuracy goal.

Setup follows the reference (anchors-measured.md, Part 2): 10 clients, MLP 64-256-10 on digits,
local: 2 epochs, SGD lr 0.1 momentum 0.9, batch 32. Steady round = median of rounds 2..R.
``--deploy`` adds a loopback deployment (SuperLink + 3 SuperNodes, TLS + node auth), 2 rounds,
against a 3-client simulation, plus the cost of one fresh ClientApp process import.

Run: .venv/bin/python benchmarks/bench_fl.py [--rounds 5] [--deploy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REFERENCE = {  # anchors-measured.md, Flower 1.41.0, 10 clients, steady round seconds
    "plain_flower": 0.207, "fedavg": 0.210, "secagg": 0.738, "dp": 0.211, "deploy_round_3_nodes": 12.45,
    "sim_round_3_nodes": 0.104,
}


def base_config(tmp: Path, name: str, rounds: int, clients: int = 10, **extra: Any) -> dict[str, Any]:
    return {"clients": clients, "rounds": rounds, "dataset": "digits", "model": {"hidden": [256]},
            "local": {"epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": 0.9},
            "output": {"dir": str(tmp / name)}, **extra}


def run_torchshield(raw: dict[str, Any]) -> dict[str, Any]:
    from torchshield.federated.config import parse_config
    from torchshield.federated.simulate import simulate

    t0 = time.perf_counter()
    result = simulate(parse_config(raw))
    whole = time.perf_counter() - t0
    secs = [r["seconds"] for r in result.rounds]
    return {"whole_s": whole, "round1_s": secs[0], "steady_s": statistics.median(secs[1:]) if len(secs) > 1 else
            float("nan"), "rounds_s": secs, "accuracy": result.final_accuracy,
            "epsilon": (result.privacy or {}).get("epsilon")}


def run_plain_flower(rounds: int, clients: int = 10) -> dict[str, Any]:
    """The same federation written directly against Flower's API (no torchshield in the loop)."""
    import numpy as np
    import torch
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.simulation import run_simulation
    from sklearn.datasets import load_digits

    from torchshield.federated.simulate import prepare_flower_env

    prepare_flower_env()
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    test, train = perm[:359], perm[359:]
    shards = np.array_split(train, clients)

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))

    def get(m: torch.nn.Module) -> list[np.ndarray]:
        return [v.detach().numpy().copy() for v in m.state_dict().values()]

    def put(m: torch.nn.Module, w: list[np.ndarray]) -> None:
        m.load_state_dict({k: torch.from_numpy(a) for k, a in zip(m.state_dict(), w, strict=True)})

    class Client(NumPyClient):
        def __init__(self, idx: np.ndarray) -> None:
            self.x, self.y = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            torch.set_num_threads(1)
            m = net()
            put(m, parameters)
            opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
            g = torch.Generator().manual_seed(0)
            for _ in range(2):
                for b in torch.randperm(len(self.y), generator=g).split(32):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(m(self.x[b]), self.y[b]).backward()
                    opt.step()
            return get(m), len(self.y), {}

    stamps: list[float] = []
    acc: list[float] = []
    model = net()
    xt, yt = torch.from_numpy(x[test]), torch.from_numpy(y[test])

    def evaluate_fn(rnd, weights, cfg):  # type: ignore[no-untyped-def]
        put(model, weights)
        with torch.no_grad():
            out = model(xt)
        if rnd > 0:
            stamps.append(time.perf_counter())
            acc.append(float((out.argmax(1) == yt).float().mean()))
        return float(torch.nn.functional.cross_entropy(out, yt)), {}

    server = ServerApp()

    @server.main()
    def main(grid, context):  # type: ignore[no-untyped-def]
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                          min_available_clients=clients, evaluate_fn=evaluate_fn,
                          initial_parameters=ndarrays_to_parameters(get(net())))
        DefaultWorkflow()(grid, LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                                              strategy=strategy))

    client = ClientApp(client_fn=lambda ctx: Client(shards[int(ctx.node_config["partition-id"])]).to_client())
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False,
                                                 "logging_level": logging.WARNING, "log_to_driver": False}})
    whole = time.perf_counter() - t0
    secs = [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]
    return {"whole_s": whole, "round1_s": secs[0], "steady_s": statistics.median(secs[1:]), "rounds_s": secs,
            "accuracy": acc[-1]}


def run_centralised(epochs: int) -> dict[str, Any]:
    import torch

    from torchshield.nn.datasets import load_dataset
    from torchshield.nn.loop import evaluate, fit
    from torchshield.nn.zoo import build_model

    data = load_dataset({"name": "sklearn:digits", "test_fraction": 0.2, "seed": 0})
    torch.manual_seed(0)
    m = build_model({"type": "mlp", "hidden": [256]}, in_features=64, num_classes=10)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    t0 = time.perf_counter()
    fit(m, data.train.loader(32, shuffle=True, seed=0), epochs=epochs, optimizer=opt, progress=False)
    return {"whole_s": time.perf_counter() - t0, "accuracy": evaluate(m, data.test.loader(256))["accuracy"]}


def run_deploy(tmp: Path, rounds: int) -> dict[str, Any]:
    from torchshield.federated.certs import make_test_certs
    from torchshield.federated.deploy import LocalDeployment

    certs = make_test_certs(tmp / "pki", nodes=3)
    t0 = time.perf_counter()
    with LocalDeployment(tmp / "deploy", nodes=3, certs=certs, start_timeout=300) as dep:
        doc = dep.run(base_config(tmp, "deploy-out", rounds, clients=3), timeout=900)
        timings = dict(dep.timings)
    secs = [r["seconds"] for r in doc["rounds"]]
    return {"whole_s": time.perf_counter() - t0, **timings, "rounds_s": secs,
            "steady_s": statistics.median(secs[1:]) if len(secs) > 1 else secs[0], "accuracy": doc["final_accuracy"]}


def fresh_clientapp_import_s() -> float:
    """What a SuperNode pays per message: a new process importing flwr + torch + our app."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torchshield.federated.client_app, torchshield.nn.loop"],
                   check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--deploy", action="store_true", help="also run the loopback deployment (slow)")
    ap.add_argument("--json", type=Path, help="write all results here")
    args = ap.parse_args()
    r = args.rounds
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fl-") as d:
        tmp = Path(d)
        res["plain_flower"] = run_plain_flower(r)
        res["fedavg"] = run_torchshield(base_config(tmp, "fedavg", r))
        res["secagg"] = run_torchshield(base_config(tmp, "secagg", r, secure_aggregation={
            "num_shares": 5, "reconstruction_threshold": 3}))
        res["dp"] = run_torchshield(base_config(tmp, "dp", r, privacy={"clip": 1.0, "noise_multiplier": 0.5}))
        res["noniid_0.5"] = run_torchshield(base_config(tmp, "noniid", r, partition={"kind": "dirichlet",
                                                                                        "alpha": 0.5}))
        res["centralised"] = run_centralised(epochs=r * 2)
        if args.deploy:
            res["sim_3_clients"] = run_torchshield(base_config(tmp, "sim3", 2, clients=3))
            res["deploy_3_nodes"] = run_deploy(tmp, 2)
            res["fresh_clientapp_import_s"] = fresh_clientapp_import_s()
    report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


def report(res: dict[str, Any]) -> None:
    plain, fed = res["plain_flower"], res["fedavg"]
    print(f"{'variant':<14}{'whole s':>9}{'round1 s':>10}{'steady s':>10}{'accuracy':>10}  vs reference / ratio")
    for name in ("plain_flower", "fedavg", "secagg", "dp", "noniid_0.5"):
        v = res[name]
        ref = REFERENCE.get(name)
        extra = f"ref steady {ref:.3f} s" if ref else ""
        print(f"{name:<14}{v['whole_s']:9.2f}{v['round1_s']:10.2f}{v['steady_s']:10.3f}{v['accuracy']:10.4f}  {extra}")
    print(f"centralised    {res['centralised']['whole_s']:9.2f}{'':20}{res['centralised']['accuracy']:10.4f}")
    print(f"wrapper overhead (torchshield FedAvg / plain Flower): steady {fed['steady_s'] / plain['steady_s']:.2f}x, "
          f"whole run {fed['whole_s'] / plain['whole_s']:.2f}x")
    print(f"SecAgg+ / FedAvg steady round: {res['secagg']['steady_s'] / fed['steady_s']:.2f}x (reference 3.5x, "
          f"goal <= 2x);  DP / FedAvg: {res['dp']['steady_s'] / fed['steady_s']:.2f}x (reference 1.0x)")
    print(f"accuracy: federated IID {fed['accuracy']:.4f}, non-IID(0.5) {res['noniid_0.5']['accuracy']:.4f}, "
          f"centralised {res['centralised']['accuracy']:.4f}; DP epsilon {res['dp']['epsilon']:.2f}")
    if "deploy_3_nodes" in res:
        dep, sim = res["deploy_3_nodes"], res["sim_3_clients"]
        print(f"deployment (3 nodes, TLS + node auth): ready {dep['federation_ready_s']:.1f} s, rounds "
              f"{[round(s, 1) for s in dep['rounds_s']]} s vs simulation rounds "
              f"{[round(s, 2) for s in sim['rounds_s']]} s -> steady {dep['steady_s'] / sim['steady_s']:.0f}x "
              f"(reference 12.45 s vs 0.104 s, 120x); one fresh ClientApp process import: "
              f"{res['fresh_clientapp_import_s']:.1f} s")


if __name__ == "__main__":
    main()
