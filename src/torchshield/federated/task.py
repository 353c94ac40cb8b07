"""What a federation learns: the data set, its shards and the model, built from the config.

Both sides build it from the same :class:`FederationConfig`, so a ClientApp in a Ray actor or
in a SuperNode's ``flwr-clientapp`` process finds its own shard from ``partition-id`` alone,
and the ServerApp holds only the global test split (the hospitals' data never leaves them).
The model, data and training loop are the shared ``torchshield.train`` pieces.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from torchshield.errors import InputError
from torchshield.federated.partition import partition_indices

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from torchshield.federated.config import FederationConfig
    from torchshield.nn.datasets import Split, TabularData

__all__ = ["FederatedTask", "build_task", "check_shapes", "get_weights", "set_weights"]


@dataclass(frozen=True)
class FederatedTask:
    config: FederationConfig
    data: TabularData
    shards: tuple[np.ndarray, ...]

    def build_model(self) -> nn.Module:
        import torch

        from torchshield.nn.zoo import build_model

        torch.manual_seed(self.config.seed)  # every party starts from the same initial model
        return build_model({"type": "mlp", "hidden": list(self.config.model_hidden)},
                           in_features=self.data.in_features, num_classes=self.data.num_classes)

    def client_split(self, partition_id: int) -> Split:
        from torchshield.nn.datasets import Split

        if not 0 <= partition_id < len(self.shards):
            raise InputError(f"partition-id {partition_id} is outside 0..{len(self.shards) - 1}",
                             hint="set --node-config 'partition-id=N' with N below the config's clients")
        idx = self.shards[partition_id]
        cap = self.config.local.max_samples
        if cap is not None and len(idx) > cap:
            idx = idx[:cap]
        return Split(self.data.train.x[idx], self.data.train.y[idx])

    def shard_sizes(self) -> list[int]:
        return [len(s) for s in self.shards]


def build_task(config: FederationConfig) -> FederatedTask:
    """Load the data and cut it into the config's shards (cached per process)."""
    return _cached_task(config)


@functools.lru_cache(maxsize=4)  # configs are frozen, hashable values; a client actor reuses its task
def _cached_task(config: FederationConfig) -> FederatedTask:
    from torchshield.nn.datasets import load_dataset

    name = config.dataset.name
    data = load_dataset({"name": name if ":" in name else f"sklearn:{name}",
                         "test_fraction": config.dataset.test_fraction, "seed": config.seed})
    labels = data.train.y.numpy()
    if config.clients > len(labels):
        raise InputError(f"clients ({config.clients}) is larger than the {len(labels)} training samples of "
                         f"{name}", hint="use fewer clients")
    shards = partition_indices(labels, config.clients, kind=config.partition.kind,
                               alpha=config.partition.alpha, seed=config.seed)
    return FederatedTask(config, data, tuple(shards))


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: list[np.ndarray]) -> None:
    import torch

    check_shapes(model, arrays, who="the server")
    state = {k: torch.from_numpy(np.asarray(a)).to(v.dtype) for (k, v), a in
             zip(model.state_dict().items(), arrays, strict=True)}
    model.load_state_dict(state, strict=True)


def check_shapes(model: nn.Module, arrays: list[Any], *, who: str) -> None:
    """Refuse arrays that do not fit the model, naming the first mismatch."""
    expected = [tuple(t.shape) for t in model.state_dict().values()]
    got = [tuple(np.shape(a)) for a in arrays]
    if len(got) != len(expected):
        raise InputError(f"{who} sent {len(got)} arrays, the model has {len(expected)}",
                         hint="every party must use the same model config")
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if e != g:
            raise InputError(f"{who} sent array {i} with shape {g}, the model expects {e}",
                             hint="every party must use the same model config")
