"""What a training run returns, and the two inputs every kind of run reads the same way: the
training-set size DP-SGD may use (public, or released with DP) and the key that encrypts the bundle.
Shared by ``train.run`` (tables) and ``train.finetune`` (text), below both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchshield.errors import InputError, about
from torchshield.train.config import TrainConfig

__all__ = ["RunResult", "bundle_key", "public_size"]


@dataclass
class RunResult:
    bundle: Path
    metrics: dict[str, Any]
    training: dict[str, Any]
    privacy: dict[str, Any] | None
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "metrics": self.metrics, "training": self.training,
                "privacy": self.privacy, "messages": self.messages}


def public_size(settings: dict[str, Any], data: Any, batch_size: int) -> tuple[int, list[dict[str, Any]]]:
    """The training-set size DP-SGD may use (sample rate, step count): public, or DP-released."""
    declared = settings.pop("dataset_size", None)
    if data.public:
        return len(data.train), []
    if declared is not None:
        if isinstance(declared, bool) or not isinstance(declared, int) or declared < batch_size:
            raise InputError(f"privacy.dataset_size must be a whole number >= batch_size ({batch_size}), "
                             f"got {declared!r}", hint="a public estimate of the training-set size")
        return declared, []
    from torchshield.train.noise import discrete_laplace, noise_source

    eps = round(0.01 * float(settings["epsilon"]), 12)  # 1% of the budget: scale 100/epsilon rows
    source = noise_source(settings.get("seed") if settings.get("insecure_seed_for_tests") else None)
    released = max(batch_size, discrete_laplace(len(data.train), eps, source))
    return released, [{"what": "training-set size (for the sample rate)", "value": released, "epsilon": eps,
                       "delta": 0.0, "mechanism": "discrete Laplace (two-sided geometric), sensitivity 1"}]


def refuse_existing_outputs(cfg: TrainConfig) -> None:
    """Refuse, before any work, to overwrite the bundle or its split file unless the config says so,
    and a signing key that does not load (found only after training, it cost the whole run)."""
    from torchshield.crypto.signing import load_signing_key
    from torchshield.nn.split import split_path

    for target in (cfg.output.bundle, split_path(cfg.output.bundle)):
        if target.exists() and not cfg.output.overwrite:
            raise InputError(f"output.bundle: {target} already exists",
                             hint="choose another path or set output.overwrite: true")
    if cfg.output.signing_key is not None:
        with about("output.signing_key"):
            load_signing_key(cfg.output.signing_key)


def bundle_key(cfg: TrainConfig) -> Any:
    """The key of ``output.key_file``, read once (a passphrase is asked for once), or None."""
    if cfg.output.key_file is None:
        return None
    from torchshield.crypto.keys import read_key_file

    return read_key_file(cfg.output.key_file)
