"""The torchshield ServerApp: runs the configured strategy over Flower's legacy workflow.

Why the legacy workflow (``LegacyContext`` + ``DefaultWorkflow``) rather than Flower's newer
Message-API strategies: in flwr 1.41 SecAgg+ exists only there (``SecAggPlusWorkflow`` refuses
any other context), and one code path for plain, DP and SecAgg+ runs keeps their results
comparable. The server holds only the global test split; it evaluates the global model after
every round and, at the end, writes the signed bundle and the per-round metrics itself, so the
simulation and a deployed SuperLink produce the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from torchshield.federated.accounting import accounting_record, noise_for_target_epsilon
from torchshield.federated.client_app import config_from_context
from torchshield.federated.result import FederationResult
from torchshield.federated.strategies import RoundRecorder, SecureClientManager, build_strategy
from torchshield.federated.task import build_task, get_weights, set_weights

if TYPE_CHECKING:  # pragma: no cover
    from flwr.app import Context
    from flwr.serverapp import Grid

    from torchshield.federated.config import FederationConfig

__all__ = ["FederationResult", "build_server_app", "resolve_noise", "run_federation"]


def resolve_noise(config: FederationConfig) -> float | None:
    """The noise multiplier: given, or the smallest one that meets ``target_epsilon``."""
    p = config.privacy
    if p is None:
        return None
    if p.noise_multiplier is not None:
        return p.noise_multiplier
    assert p.target_epsilon is not None
    return noise_for_target_epsilon(target_epsilon=p.target_epsilon, clients=config.clients,
                                    per_round=config.clients_per_round, rounds=config.rounds, delta=p.delta,
                                    neighbouring=p.neighbouring)


def run_federation(grid: Grid, context: Context, config: FederationConfig, *,
                   on_round: Callable[[dict[str, Any]], None] | None = None, rng: Any = None) -> FederationResult:
    """Run ``config.rounds`` rounds on ``grid`` and write the outputs."""
    import torch

    from torchshield.nn.loop import evaluate

    task = build_task(config)
    model = task.build_model()
    recorder = RoundRecorder(on_round=on_round, private=config.privacy is not None)
    test_loader = task.data.test.loader(256)

    def evaluate_fn(server_round: int, weights: list[Any], _cfg: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        set_weights(model, weights)
        m = evaluate(model, test_loader)
        if server_round > 0:
            recorder.evaluated(server_round, weights, m["loss"], m["accuracy"])
        return m["loss"], {"accuracy": m["accuracy"]}

    z = resolve_noise(config)
    strategy = build_strategy(config, initial=get_weights(model), evaluate_fn=evaluate_fn, recorder=recorder,
                              noise_multiplier=z, rng=rng)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds), strategy=strategy,
                           client_manager=SecureClientManager(population=config.clients))
    sa = config.secure_aggregation
    fit_workflow = None if sa is None else SecAggPlusWorkflow(
        num_shares=sa.num_shares, reconstruction_threshold=sa.reconstruction_threshold,
        clipping_range=sa.clipping_range, quantization_range=sa.quantization_range,
        max_weight=1.0 if config.privacy is not None else float(max(task.shard_sizes())), timeout=sa.timeout)
    with torch.no_grad():
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    privacy = None
    if config.privacy is not None and z is not None:
        done = len(recorder.rounds)
        privacy = accounting_record(noise_multiplier=z, clients=config.clients, per_round=config.clients_per_round,
                                    rounds=done, delta=config.privacy.delta,
                                    neighbouring=config.privacy.neighbouring, clip=config.privacy.clip)
        privacy["noise"] = strategy.inner.noise.describe() if hasattr(strategy.inner, "noise") else None
    final = recorder.rounds[-1]["test_accuracy"] if recorder.rounds else float("nan")
    result = FederationResult(config, recorder.rounds, privacy, final, rejected=recorder.rejected)
    if recorder.final_weights is not None:
        set_weights(model, recorder.final_weights)
        from torchshield.federated.outputs import write_outputs

        result.outputs = write_outputs(result, model, task)
    return result


def build_server_app(config: FederationConfig | None = None, *,
                     on_round: Callable[[dict[str, Any]], None] | None = None,
                     results: list[FederationResult] | None = None, rng: Any = None) -> ServerApp:
    """A ServerApp for ``config`` (or the run config's); appends its result to ``results``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config or config_from_context(context)
        result = run_federation(grid, context, cfg, on_round=on_round, rng=rng)
        if results is not None:
            results.append(result)

    return app
