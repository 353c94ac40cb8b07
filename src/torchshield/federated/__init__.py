"""Federated learning on Flower: simulation, SecAgg+, client-level DP and real deployment.

Flower is the engine; torchshield adds the validated ``fl.yaml``, partitions, the apps,
strategy wrappers (client-level DP with CSPRNG noise and accounting, shape checks), signed
outputs, TLS/node-auth material and process supervision for deployments. Importing this
package does not import Flower; the names below load it on first use.
"""

from __future__ import annotations

from torchshield._lazy import lazy_exports

__all__ = [
    "FederationConfig",
    "client_level_epsilon",
    "dirichlet_partition",
    "iid_partition",
    "load_config",
    "parse_config",
    "simulate",
]

_LAZY = {
    "FederationConfig": "torchshield.federated.config",
    "load_config": "torchshield.federated.config",
    "parse_config": "torchshield.federated.config",
    "client_level_epsilon": "torchshield.federated.accounting",
    "dirichlet_partition": "torchshield.federated.partition",
    "iid_partition": "torchshield.federated.partition",
    "simulate": "torchshield.federated.simulate",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())
