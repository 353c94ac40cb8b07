"""What a federation leaves behind: the global model as a (signed) ``.tsb`` bundle, and the
per-round metrics as JSON and CSV.

The bundle's ``privacy`` slot records the client-level ε actually spent (rounds completed, not
rounds planned), and ``provenance`` how the model was made (strategy, partition, SecAgg+), so
an assessor reads the guarantees from the artifact rather than from a log.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchshield.atomic import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from torchshield.federated.result import FederationResult
    from torchshield.federated.task import FederatedTask

__all__ = ["metrics_document", "write_outputs"]


def metrics_document(result: FederationResult) -> dict[str, Any]:
    cfg = result.config
    return {"clients": cfg.clients, "rounds_planned": cfg.rounds, "strategy": cfg.strategy.name,
            "partition": {"kind": cfg.partition.kind, "alpha": cfg.partition.alpha if
                          cfg.partition.kind == "dirichlet" else None},
            "secure_aggregation": cfg.secure_aggregation is not None, "privacy": result.privacy,
            "final_accuracy": result.final_accuracy, "rounds": result.rounds,
            "rejected": result.rejected if cfg.privacy is None else len(result.rejected)}


def write_outputs(result: FederationResult, model: nn.Module, task: FederatedTask) -> dict[str, str]:
    import torchshield

    cfg = result.config
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    provenance = {
        "producer": "torchshield fl", "dataset": task.data.describe(), "clients": cfg.clients,
        "rounds": len(result.rounds), "strategy": cfg.strategy.name, "partition": cfg.partition.kind,
        "dirichlet_alpha": cfg.partition.alpha if cfg.partition.kind == "dirichlet" else None,
        "secure_aggregation": None if cfg.secure_aggregation is None else {
            "protocol": "SecAgg+", "num_shares": cfg.secure_aggregation.num_shares,
            "reconstruction_threshold": cfg.secure_aggregation.reconstruction_threshold},
        "model_hidden": list(cfg.model_hidden),
    }
    if cfg.privacy is None:  # under client-level DP a client's data size is its data
        provenance["shard_sizes"] = task.shard_sizes()
    else:
        provenance["dataset"] = {k: v for k, v in provenance["dataset"].items() if k != "fingerprint"}
    bundle = torchshield.save(model, out / "global_model.tsb", sign_with=cfg.sign_with,
                              metadata={"final_accuracy": _finite(result.final_accuracy)},
                              privacy=_clean(result.privacy), provenance=provenance)
    doc = _clean(metrics_document(result))
    atomic_write_bytes(out / "metrics.json", (json.dumps(doc, indent=2) + "\n").encode())
    atomic_write_bytes(out / "metrics.csv", _csv(result.rounds).encode())
    return {"model": str(bundle), "metrics_json": str(out / "metrics.json"), "metrics_csv": str(out / "metrics.csv")}


def _csv(rounds: list[dict[str, Any]]) -> str:
    """One row per round and client, plus the round's global test metrics."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["round", "seconds", "test_accuracy", "test_loss", "partition_id", "client_loss", "client_examples"])
    for r in rounds:
        for c in r.get("clients") or [{"partition_id": "", "loss": "", "examples": ""}]:
            w.writerow([r["round"], r["seconds"], r["test_accuracy"], r["test_loss"], c["partition_id"], c["loss"],
                        c["examples"]])
    return buf.getvalue()


def _finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf; write them as null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return _finite(obj)
    return obj
