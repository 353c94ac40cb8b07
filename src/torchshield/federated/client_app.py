"""The torchshield ClientApp: local training on one client's shard, behind Flower's mods.

A client never ships data, only its updated weights. Cross-cutting protections are Flower
mods around the app, in this order (outermost first):

- ``secaggplus_mod`` masks the update so the server learns only the sum (SecAgg+);
- ``fixedclipping_mod`` clips the update to the DP norm ``C`` *before* it is masked;

and an optional de-identification hook (:mod:`torchshield.federated.deid`) scrubs the shard
before the first local step. The same app runs in the simulation (in a Ray actor) and on a
SuperNode (in a ``flwr-clientapp`` process); there it reads the config from the run config.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flwr.client import Client, ClientApp, NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod

from torchshield.federated.config import FederationConfig, parse_config
from torchshield.federated.task import FederatedTask, build_task, get_weights, set_weights

if TYPE_CHECKING:  # pragma: no cover
    from flwr.app import Context

__all__ = ["RUN_CONFIG_KEY", "ShieldClient", "build_client_app", "config_from_context"]

RUN_CONFIG_KEY = "torchshield-config"


class ShieldClient(NumPyClient):
    """Trains the global model for ``local.epochs`` on this client's shard."""

    def __init__(self, task: FederatedTask, partition_id: int) -> None:
        self.task = task
        self.partition_id = partition_id
        split = task.client_split(partition_id)
        if task.config.deid_policy:
            from torchshield.federated.deid import deidentify_split

            split = deidentify_split(split, task, policy=task.config.deid_policy)
        self.split = split

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
        import torch

        from torchshield.nn.loop import fit

        cfg = self.task.config
        server_round = int(config.get("server_round", 0))
        if self.partition_id < cfg.dropout.clients and server_round >= cfg.dropout.from_round:
            raise ConnectionAbortedError(f"client {self.partition_id} dropped out (dropout drill)")
        torch.set_num_threads(1)  # many clients share few cores; one thread each avoids oversubscription
        model = self.task.build_model()
        set_weights(model, parameters)
        regularizers = []
        mu = float(config.get("proximal_mu", 0.0))
        if mu > 0:  # FedProx: keep the local model near the round's global model
            anchor = [p.detach().clone() for p in model.parameters()]

            def proximal(m: torch.nn.Module) -> torch.Tensor:
                return (mu / 2) * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor, strict=True))

            regularizers.append(proximal)
        local = cfg.local
        loader = self.split.loader(local.batch_size, shuffle=True,
                                   seed=cfg.seed * 100_003 + server_round * 1_009 + self.partition_id)
        optimizer = torch.optim.SGD(model.parameters(), lr=local.lr, momentum=local.momentum)
        result = fit(model, loader, epochs=local.epochs, optimizer=optimizer, regularizers=regularizers)
        # Under DP every client weighs the same (the sensitivity bound assumes it); the weight
        # is also what SecAgg+ multiplies into the masked sum, so it is set here, on the client.
        if cfg.privacy is not None:  # a client's loss and data size are its data: not sent under DP
            return get_weights(model), 1, {"partition_id": self.partition_id}
        return get_weights(model), len(self.split), {"loss": float(result.final_loss),
                                                     "partition_id": self.partition_id, "examples": len(self.split)}


def config_from_context(context: Context) -> FederationConfig:
    """The federation config a deployed app receives through Flower's run config."""
    raw = context.run_config.get(RUN_CONFIG_KEY)
    if not isinstance(raw, str):
        from torchshield.errors import InputError

        raise InputError(f"run config has no {RUN_CONFIG_KEY!r}", hint="start the run with `torchshield fl deploy`")
    return parse_config(json.loads(raw), source="run config")


def build_client_app(config: FederationConfig | None = None) -> ClientApp:
    """A ClientApp for ``config`` (or, when None, for the config in each run's run config)."""

    def client_fn(context: Context) -> Client:
        cfg = config or config_from_context(context)
        partition_id = int(context.node_config["partition-id"])
        return ShieldClient(build_task(cfg), partition_id).to_client()

    mods = []
    if config is None or config.secure_aggregation is not None:
        mods.append(_secagg_when_asked)
    if config is None or config.privacy is not None:
        mods.append(_clipping_when_asked)
    return ClientApp(client_fn=client_fn, mods=mods)


def _secagg_when_asked(msg: Any, ctxt: Any, call_next: Any) -> Any:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages; plain fit messages pass through.

    Flower's mod raises on a message without SecAgg+ stage configs, and a deployed app
    serves runs with and without secure aggregation."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def _clipping_when_asked(msg: Any, ctxt: Any, call_next: Any) -> Any:
    """Flower's ``fixedclipping_mod`` when the server asks for clipping, a no-op otherwise.

    Deployed apps serve every run config, and Flower's mod raises when the server did not
    send a clipping norm; so the mod runs only for messages that carry one."""
    from flwr.app.message_type import MessageType
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    if msg.metadata.message_type == MessageType.TRAIN:
        for record in msg.content.config_records.values():
            if KEY_CLIPPING_NORM in record:
                return fixedclipping_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)
