"""Strategy glue: Flower's FedAvg / FedProx / FedAdam, wrapped for client-level DP and shape checks.

Behaviour is added by *wrapping* a Flower strategy (Flower's own DP design), never by forking it:

- :class:`ClientLevelDP` extends Flower's ``DifferentialPrivacyClientSideFixedClipping`` (clients
  clip their update to norm ``C`` with Flower's ``fixedclipping_mod``; the server adds noise to
  the mean). Clipping is on the client because under SecAgg+ the server never sees one update.
  We override ``aggregate_fit`` because Flower's (1.41) falls short of what the guarantee needs:

  1. its noise comes from ``np.random.normal`` (the global Mersenne Twister, predictable from
     outputs); ours comes from a CSPRNG (``torchshield.train.noise``: the AES-256-CTR keystream);
  2. it averages with FedAvg's ``num_examples`` weights, so one client's weight, and the
     sensitivity, depend on its claimed data size; we force uniform weights (sensitivity ``C/m``);
  3. it discards a round in which any client failed; we aggregate the ``m`` survivors with
     noise std ``z·C/m``, which keeps the same noise multiplier and therefore the same ε;
  4. it adds the noise *after* the inner strategy's step, which for an adaptive server optimiser
     (FedAdam: a non-linear function of the mean) is not the Gaussian mechanism on the mean; we
     add it to the mean first and hand the inner strategy only the noisy mean.

- :class:`SecureClientManager` samples each round's clients with the OS CSPRNG, uniformly from
  the whole population (Flower's uses the Mersenne Twister of ``random``): amplification by
  sampling assumes the adversary cannot predict who took part.
- :class:`ShapeGuard` rejects an update whose arrays do not match the global model, naming
  the client, instead of letting numpy broadcast or crash deep inside aggregation.

Threat model: the server is honest-but-curious about individual clients (SecAgg+ hides single
updates; DP bounds what the released model says about any one client); clients may be
faulty (wrong shapes, dropping out) but are not assumed to be Byzantine-robustly filtered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.common import (
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAdam,
    FedAvg,
    FedProx,
    Strategy,
)

from torchshield.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy

    from torchshield.federated.config import FederationConfig

__all__ = ["ClientLevelDP", "RoundRecorder", "SecureClientManager", "ShapeGuard", "build_strategy"]


@dataclass
class RoundRecorder:
    """Collects per-round metrics on the server: global test accuracy and, without DP, per-client losses.

    Under client-level DP (``private``) a round's row says how many updates were aggregated but
    not which clients sent them, nor their losses or data sizes: who took part must stay secret
    for sampling to amplify privacy, and a client's loss and size are its data."""

    on_round: Callable[[dict[str, Any]], None] | None = None
    private: bool = False
    rounds: list[dict[str, Any]] = field(default_factory=list)
    final_weights: NDArrays | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)
    _client_metrics: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def fit_metrics(self, server_round: int, metrics: list[tuple[int, dict[str, Scalar]]]) -> None:
        self._client_metrics[server_round] = [
            {"partition_id": int(m.get("partition_id", -1)), "loss": float(m.get("loss", float("nan"))),
             "examples": int(m.get("examples", n))} for n, m in metrics]

    def evaluated(self, server_round: int, weights: NDArrays, loss: float, accuracy: float) -> None:
        now = time.perf_counter()
        self.final_weights = [np.array(w, copy=True) for w in weights]
        clients = sorted(self._client_metrics.get(server_round, []), key=lambda c: c["partition_id"])
        row = {"round": server_round, "seconds": round(now - self._last, 4), "test_loss": loss,
               "test_accuracy": accuracy, "clients": clients,
               "rejected": [r for r in self.rejected if r["round"] == server_round]}
        if self.private:
            row["clients_aggregated"] = len(row.pop("clients"))
            row["rejected"] = len(row["rejected"])
        self._last = now
        self.rounds.append(row)
        if self.on_round is not None:
            self.on_round(row)


class _Wrapper(Strategy):
    """Forwards everything to ``inner``; subclasses override what they add."""

    def __init__(self, inner: Strategy) -> None:
        super().__init__()
        self.inner = inner

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> Any:
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> Any:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: list[Any], failures: list[Any]) -> Any:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> Any:
        return self.inner.evaluate(server_round, parameters)


class ShapeGuard(_Wrapper):
    """Drops updates whose array shapes differ from the global model's, and records why."""

    def __init__(self, inner: Strategy, shapes: list[tuple[int, ...]], recorder: RoundRecorder) -> None:
        super().__init__(inner)
        self.shapes = shapes
        self.recorder = recorder

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        kept: list[tuple[ClientProxy, FitRes]] = []
        failures = list(failures)
        for proxy, res in results:
            problem = self._problem(parameters_to_ndarrays(res.parameters))
            if problem is None:
                kept.append((proxy, res))
                continue
            client = int(res.metrics.get("partition_id", -1)) if res.metrics else -1
            log(WARNING, "torchshield: rejected the update of client %s in round %s: %s", client, server_round,
                problem)
            self.recorder.rejected.append({"round": server_round, "partition_id": client, "reason": problem})
            failures.append(InputError(problem))
        if results and not kept:
            raise InputError(f"round {server_round}: every client update had the wrong shapes "
                             f"({self.recorder.rejected[-1]['reason']})",
                             hint="every client must run the same model config as the server")
        return self.inner.aggregate_fit(server_round, kept, failures)

    def _problem(self, arrays: NDArrays) -> str | None:
        if len(arrays) != len(self.shapes):
            return f"{len(arrays)} arrays sent, the model has {len(self.shapes)}"
        for i, (a, want) in enumerate(zip(arrays, self.shapes, strict=True)):
            if tuple(a.shape) != want:
                return f"array {i} has shape {tuple(a.shape)}, the model expects {want}"
        return None


class SecureClientManager(SimpleClientManager):
    """Fixed-size sampling without replacement from all ``population`` clients, with the OS CSPRNG."""

    def __init__(self, *, population: int) -> None:
        super().__init__()
        self.population = population
        self._random = secrets.SystemRandom()

    def sample(self, num_clients: int, min_num_clients: int | None = None, criterion: Any = None) -> list[Any]:
        self.wait_for(max(self.population, min_num_clients or num_clients))  # uniform over the whole population
        cids = [c for c in self.clients if criterion is None or criterion.select(self.clients[c])]
        if num_clients > len(cids):
            return []
        return [self.clients[c] for c in self._random.sample(sorted(cids), num_clients)]


class ClientLevelDP(DifferentialPrivacyClientSideFixedClipping):
    """Client-level DP-FedAvg over any Flower strategy (see the module docstring for why ours)."""

    def __init__(self, strategy: Strategy, *, noise_multiplier: float, clipping_norm: float,
                 num_sampled_clients: int, rng: Any = None) -> None:
        from torchshield.train.noise import SecureNoise, SeededNoise

        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients)
        # The CSPRNG; tests may pass an int seed (or a seeded NoiseSource) to make runs repeatable.
        self.noise = SeededNoise(rng) if isinstance(rng, int) else rng or SecureNoise()
        self.noise_stds: list[float] = []

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        # Uniform mean of the m survivors (sensitivity C/m whatever a client claims as its size).
        # Under SecAgg+ every result already holds the same aggregate, and its mean is itself.
        arrays = [parameters_to_ndarrays(res.parameters) for _, res in results]
        std = self.noise_multiplier * self.clipping_norm / len(results)
        noisy = [np.mean([a[i] for a in arrays], axis=0).astype(arrays[0][i].dtype) for i in range(len(arrays[0]))]
        noisy = [m + self.noise.normal_array(m.size, std).reshape(m.shape).astype(m.dtype) for m in noisy]
        self.noise_stds.append(std)
        log(INFO, "torchshield: client-level DP noise std %.5f over %d clients in round %d", std, len(results),
            server_round)
        # The inner strategy sees only the noisy mean (as every client's result), so whatever it
        # does next, FedAdam's adaptive step included, is post-processing of a DP release.
        released = ndarrays_to_parameters(noisy)
        for _, res in results:
            res.parameters, res.num_examples = released, 1
        return self.strategy.aggregate_fit(server_round, results, failures)


def build_strategy(config: FederationConfig, *, initial: NDArrays, evaluate_fn: Callable[..., Any],
                   recorder: RoundRecorder, noise_multiplier: float | None,
                   rng: Any = None) -> Strategy:
    """The Flower strategy the config asks for, wrapped for DP and shape checks."""
    k = config.clients_per_round

    current_round = [0]  # fit_metrics_aggregation_fn is not told the round; configure_fit is

    def on_fit_config(server_round: int) -> dict[str, Scalar]:
        current_round[0] = server_round
        return {"server_round": server_round}

    def fit_metrics(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
        recorder.fit_metrics(current_round[0], metrics)
        losses = [float(m["loss"]) for _, m in metrics if "loss" in m]
        return {"mean_client_loss": float(np.mean(losses)) if losses else float("nan")}

    common: dict[str, Any] = {
        "fraction_fit": config.fraction_fit, "fraction_evaluate": 0.0, "min_fit_clients": k,
        "min_evaluate_clients": 0, "min_available_clients": config.clients, "evaluate_fn": evaluate_fn,
        "on_fit_config_fn": on_fit_config, "accept_failures": True,
        "initial_parameters": ndarrays_to_parameters(initial), "fit_metrics_aggregation_fn": fit_metrics,
    }
    s = config.strategy
    inner: Strategy
    if s.name == "fedprox":
        inner = FedProx(proximal_mu=s.proximal_mu, **common)
    elif s.name == "fedadam":
        inner = FedAdam(eta=s.server_lr, eta_l=config.local.lr, tau=s.tau, **common)
    else:
        inner = FedAvg(**common)
    if config.privacy is not None:
        inner = ClientLevelDP(inner, noise_multiplier=float(noise_multiplier or 0.0),
                              clipping_norm=config.privacy.clip, num_sampled_clients=k, rng=rng)
    return ShapeGuard(inner, [tuple(a.shape) for a in initial], recorder)
