"""The ``fl.yaml`` model: one validated description of a federation.

Every mistake is caught here, before Ray or a SuperLink starts, and reported as an
:class:`~torchshield.errors.InputError` that names the field and the fix. The same object
drives the simulation and the deployment apps, so both run exactly the same federation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchshield.errors import FormatError, InputError, about

__all__ = [
    "DatasetConfig",
    "DropoutConfig",
    "FederationConfig",
    "LocalTraining",
    "PartitionConfig",
    "PrivacyConfig",
    "SecAggConfig",
    "StrategyConfig",
    "load_config",
    "parse_config",
]

STRATEGIES = ("fedavg", "fedprox", "fedadam")
DATASETS = ("digits", "breast_cancer")


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"
    test_fraction: float = 0.2


@dataclass(frozen=True)
class PartitionConfig:
    kind: str = "iid"  # "iid" or "dirichlet"
    alpha: float = 0.5


@dataclass(frozen=True)
class StrategyConfig:
    name: str = "fedavg"
    proximal_mu: float = 0.01  # FedProx
    server_lr: float = 0.01  # FedAdam's eta
    tau: float = 1e-3  # FedAdam's adaptivity


@dataclass(frozen=True)
class LocalTraining:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    max_samples: int | None = None  # bound on per-client work per round


@dataclass(frozen=True)
class SecAggConfig:
    num_shares: int = 3
    reconstruction_threshold: int = 2
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    timeout: float | None = None


@dataclass(frozen=True)
class PrivacyConfig:
    clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    neighbouring: str = "replace-one"  # or "add-remove" (only with every client in every round)


@dataclass(frozen=True)
class DropoutConfig:
    """Fault injection for tests and drills: ``clients`` clients fail their training from
    ``from_round`` on (the SecAgg+ masks of a dropped client are then reconstructed)."""

    clients: int = 0
    from_round: int = 1


@dataclass(frozen=True)
class FederationConfig:
    clients: int = 3
    rounds: int = 2
    fraction_fit: float = 1.0
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    model_hidden: tuple[int, ...] = (64,)
    local: LocalTraining = field(default_factory=LocalTraining)
    secure_aggregation: SecAggConfig | None = None
    privacy: PrivacyConfig | None = None
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    deid_policy: str | None = None
    output_dir: str = "fl-output"
    sign_with: str | None = None
    client_cpus: float = 1.0
    num_cpus: int | None = None

    @property
    def clients_per_round(self) -> int:
        """Clients sampled each round; the same count Flower's FedAvg derives."""
        return max(1, int(self.clients * self.fraction_fit))

    @property
    def sample_rate(self) -> float:
        return self.clients_per_round / self.clients

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TOP_KEYS = {
    "clients", "rounds", "fraction_fit", "seed", "dataset", "partition", "strategy", "model", "local",
    "secure_aggregation", "privacy", "dropout", "deid", "output", "backend",
}


def load_config(path: str | Path) -> FederationConfig:
    """Read and validate ``fl.yaml``."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file", hint="pass the path of an fl.yaml") from None
    except yaml.YAMLError as exc:
        raise FormatError(f"{p}: not valid YAML ({type(exc).__name__})") from None
    return parse_config(raw or {}, source=str(p))


def parse_config(raw: Any, *, source: str = "fl.yaml") -> FederationConfig:
    """Build a :class:`FederationConfig` from a mapping, checking every field."""
    if not isinstance(raw, dict):
        raise FormatError(f"{source}: the top level must be a mapping")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise InputError(f"{source}: unknown field(s) {unknown}", hint=f"known fields: {sorted(_TOP_KEYS)}")
    f = _Fields(source)
    clients = f.int_(raw, "clients", 3, low=1)
    rounds = f.int_(raw, "rounds", 2, low=1)
    fraction_fit = f.float_(raw, "fraction_fit", 1.0, low=0.0, high=1.0, open_low=True)
    dataset = _dataset(f, raw.get("dataset", "digits"))
    partition = _partition(f, raw.get("partition", "iid"))
    strategy = _strategy(f, raw.get("strategy", "fedavg"))
    model = f.section(raw, "model")
    hidden = model.get("hidden", [64])
    if not (isinstance(hidden, list) and hidden and all(isinstance(h, int) and h > 0 for h in hidden)):
        raise InputError(f"{source}: model.hidden must be a non-empty list of positive integers")
    local = _local(f, f.section(raw, "local"))
    secagg = _secagg(f, raw.get("secure_aggregation", False), clients, max(1, int(clients * fraction_fit)))
    privacy = _privacy(f, raw.get("privacy"))
    if privacy is not None:
        from torchshield.federated.accounting import check_accountable

        check_accountable(clients=clients, per_round=max(1, int(clients * fraction_fit)),
                          neighbouring=privacy.neighbouring)
    drop = f.section(raw, "dropout")
    dropout = DropoutConfig(clients=f.int_(drop, "dropout.clients", 0, low=0, key="clients"),
                            from_round=f.int_(drop, "dropout.from_round", 1, low=1, key="from_round"))
    if dropout.clients >= clients:
        raise InputError(f"{source}: dropout.clients ({dropout.clients}) must be below clients ({clients})")
    deid = f.section(raw, "deid")
    out = f.section(raw, "output")
    out_dir = Path(str(out.get("dir", "fl-output")))
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{source}: output.dir {out_dir} exists and is not a folder",
                         hint="name a folder (it is created if missing)")
    if out.get("sign_with") is not None:  # refused now, not after the last round
        from torchshield.crypto.signing import load_signing_key

        with about(f"{source}: output.sign_with"):
            load_signing_key(str(out["sign_with"]))
    backend = f.section(raw, "backend")
    cfg = FederationConfig(
        clients=clients, rounds=rounds, fraction_fit=fraction_fit, seed=f.int_(raw, "seed", 0, low=0),
        dataset=dataset, partition=partition, strategy=strategy, model_hidden=tuple(hidden), local=local,
        secure_aggregation=secagg, privacy=privacy, dropout=dropout,
        deid_policy=deid.get("policy"), output_dir=str(out_dir),
        sign_with=out.get("sign_with"),
        client_cpus=f.float_(backend, "backend.client_cpus", 1.0, low=0.0, open_low=True, key="client_cpus"),
        num_cpus=(f.int_(backend, "backend.num_cpus", 1, low=1, key="num_cpus") if "num_cpus" in backend else None),
    )
    if secagg is not None and dropout.clients > cfg.clients_per_round - secagg.reconstruction_threshold:
        raise InputError(
            f"{source}: dropout.clients ({dropout.clients}) exceeds what SecAgg+ survives "
            f"({cfg.clients_per_round} sampled - threshold {secagg.reconstruction_threshold})")
    return cfg


class _Fields:
    """Typed field readers that name the offending field in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def section(self, raw: dict[str, Any], name: str) -> dict[str, Any]:
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            raise InputError(f"{self.source}: {name} must be a mapping")
        return value

    def int_(self, raw: dict[str, Any], name: str, default: int, *, low: int | None = None,
             key: str | None = None) -> int:
        value = raw.get(key or name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{self.source}: {name} must be an integer, got {value!r}")
        if low is not None and value < low:
            raise InputError(f"{self.source}: {name} must be >= {low}, got {value}")
        return value

    def float_(self, raw: dict[str, Any], name: str, default: float, *, low: float | None = None,
               high: float | None = None, open_low: bool = False, key: str | None = None) -> float:
        value = raw.get(key or name, default)
        if isinstance(value, str):  # YAML 1.1 (PyYAML) reads 1e-5 as a string; train accepts it too
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{self.source}: {name} must be a number, got {value!r}")
        if low is not None and (value <= low if open_low else value < low):
            raise InputError(f"{self.source}: {name} must be {'>' if open_low else '>='} {low}, got {value}")
        if high is not None and value > high:
            raise InputError(f"{self.source}: {name} must be <= {high}, got {value}")
        return float(value)


def _named(f: _Fields, value: Any, field_name: str) -> dict[str, Any]:
    """Accept ``field: name`` as shorthand for ``field: {name: ...}``."""
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict):
        raise InputError(f"{f.source}: {field_name} must be a name or a mapping")
    return value


def _dataset(f: _Fields, value: Any) -> DatasetConfig:
    d = _named(f, value, "dataset")
    name = d.get("name", "digits")
    if name not in DATASETS:
        raise InputError(f"{f.source}: dataset.name {name!r} is not known", hint=f"use one of {list(DATASETS)}")
    test = f.float_(d, "dataset.test_fraction", 0.2, low=0.0, high=0.9, open_low=True, key="test_fraction")
    return DatasetConfig(name=name, test_fraction=test)


def _partition(f: _Fields, value: Any) -> PartitionConfig:
    d = {"kind": value} if isinstance(value, str) else value
    if not isinstance(d, dict):
        raise InputError(f"{f.source}: partition must be 'iid' or a mapping")
    kind = d.get("kind", "iid")
    if kind not in ("iid", "dirichlet"):
        raise InputError(f"{f.source}: partition.kind {kind!r} is not known", hint="use 'iid' or 'dirichlet'")
    alpha = d.get("alpha", 0.5)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or not math.isfinite(alpha):
        raise InputError(f"{f.source}: partition.alpha must be a finite number > 0, got {alpha!r}",
                         hint="small alpha (0.1) is very non-IID, large alpha (100) is close to IID")
    return PartitionConfig(kind=kind, alpha=float(alpha))


def _strategy(f: _Fields, value: Any) -> StrategyConfig:
    d = _named(f, value, "strategy")
    name = str(d.get("name", "fedavg")).lower()
    if name not in STRATEGIES:
        raise InputError(f"{f.source}: strategy.name {name!r} is not known", hint=f"use one of {list(STRATEGIES)}")
    return StrategyConfig(
        name=name,
        proximal_mu=f.float_(d, "strategy.proximal_mu", 0.01, low=0.0, key="proximal_mu"),
        server_lr=f.float_(d, "strategy.server_lr", 0.01, low=0.0, open_low=True, key="server_lr"),
        tau=f.float_(d, "strategy.tau", 1e-3, low=0.0, open_low=True, key="tau"),
    )


def _local(f: _Fields, d: dict[str, Any]) -> LocalTraining:
    max_samples = d.get("max_samples")
    if max_samples is not None:
        max_samples = f.int_(d, "local.max_samples", 0, low=1, key="max_samples")
    return LocalTraining(
        epochs=f.int_(d, "local.epochs", 1, low=1, key="epochs"),
        batch_size=f.int_(d, "local.batch_size", 32, low=1, key="batch_size"),
        lr=f.float_(d, "local.lr", 0.1, low=0.0, open_low=True, key="lr"),
        momentum=f.float_(d, "local.momentum", 0.9, low=0.0, high=1.0, key="momentum"),
        max_samples=max_samples,
    )


def _secagg(f: _Fields, value: Any, clients: int, per_round: int) -> SecAggConfig | None:
    if value is False or value is None:
        return None
    d: dict[str, Any] = {} if value is True else value
    if not isinstance(d, dict):
        raise InputError(f"{f.source}: secure_aggregation must be true/false or a mapping")
    if per_round < 2:
        raise InputError(f"{f.source}: secure aggregation needs at least 2 clients per round, got {per_round}")
    shares = f.int_(d, "secure_aggregation.num_shares", min(per_round, 3), low=2, key="num_shares")
    threshold = f.int_(d, "secure_aggregation.reconstruction_threshold", max(2, shares * 2 // 3), low=2, key="reconstruction_threshold")
    if threshold > per_round:
        raise InputError(
            f"{f.source}: secure_aggregation.reconstruction_threshold ({threshold}) is larger than the "
            f"number of clients per round ({per_round})", hint="lower the threshold or add clients")
    if shares > per_round:
        raise InputError(f"{f.source}: secure_aggregation.num_shares ({shares}) is larger than the number of "
                         f"clients per round ({per_round})")
    if threshold > shares:
        raise InputError(f"{f.source}: secure_aggregation.reconstruction_threshold ({threshold}) is larger than "
                         f"num_shares ({shares})")
    timeout = d.get("timeout")
    if timeout is not None:
        timeout = f.float_(d, "secure_aggregation.timeout", 0.0, low=0.0, open_low=True, key="timeout")
    return SecAggConfig(
        num_shares=shares, reconstruction_threshold=threshold,
        clipping_range=f.float_(d, "secure_aggregation.clipping_range", 8.0, low=0.0, open_low=True,
                                key="clipping_range"),
        quantization_range=f.int_(d, "secure_aggregation.quantization_range", 2**22, low=2,
                                  key="quantization_range"),
        timeout=timeout,
    )


def _privacy(f: _Fields, value: Any) -> PrivacyConfig | None:
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        raise InputError(f"{f.source}: privacy must be a mapping like {{clip: 1.0, noise_multiplier: 1.0}}")
    clip = f.float_(value, "privacy.clip", 1.0, low=0.0, open_low=True, key="clip")
    delta = f.float_(value, "privacy.delta", 1e-5, low=0.0, high=1.0, open_low=True, key="delta")
    has_z, has_eps = "noise_multiplier" in value, "target_epsilon" in value
    if has_z == has_eps:
        raise InputError(f"{f.source}: privacy needs exactly one of noise_multiplier or target_epsilon")
    z = f.float_(value, "privacy.noise_multiplier", 0.0, low=0.0, key="noise_multiplier") if has_z else None
    eps = (f.float_(value, "privacy.target_epsilon", 0.0, low=0.0, open_low=True, key="target_epsilon")
           if has_eps else None)
    unknown = sorted(set(value) - {"clip", "delta", "noise_multiplier", "target_epsilon", "neighbouring"})
    if unknown:
        raise InputError(f"{f.source}: unknown privacy field(s) {unknown}",
                         hint="known: clip, delta, noise_multiplier, target_epsilon, neighbouring")
    neighbouring = str(value.get("neighbouring", "replace-one"))
    return PrivacyConfig(clip=clip, noise_multiplier=z, target_epsilon=eps, delta=delta, neighbouring=neighbouring)
