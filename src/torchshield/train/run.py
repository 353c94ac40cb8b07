"""One training run from a validated config: data -> model -> (DP) -> fit -> evaluate -> signed bundle.

Sections that other capabilities own are dispatched lazily (``adversarial:``/``augment:`` to
``torchshield.robust.training``, ``watermark:`` to ``torchshield.model.watermark.training``), so
a build without them still trains and says clearly what is missing when a config asks for it."""

from __future__ import annotations

import datetime as _dt
import importlib
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchshield._version import __version__
from torchshield.errors import InputError
from torchshield.nn.datasets import load_dataset
from torchshield.nn.loop import EpochEnd, ProgressFactory, Regularizer, evaluate, fit
from torchshield.nn.zoo import build_model
from torchshield.train.config import TrainConfig, build_optimizer

__all__ = ["RunResult", "train_from_config"]


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


def _optional(module: str, attr: str, what: str) -> Callable[..., Any]:
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise InputError(f"{what} is not available in this build",
                             hint=f"remove that section, or install a torchshield with {module}") from None
        raise


def train_from_config(cfg: TrainConfig, *, progress: ProgressFactory | None = None,
                      on_epoch: Callable[[EpochEnd], Any] | None = None) -> RunResult:
    torch.manual_seed(cfg.seed)
    if cfg.output.bundle.exists() and not cfg.output.overwrite:
        raise InputError(f"output.bundle: {cfg.output.bundle} already exists",
                         hint="choose another path or set output.overwrite: true")
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, in_shape=data.input_shape, num_classes=data.num_classes)
    messages: list[str] = []
    loss_fn = None
    if cfg.adversarial or cfg.augment:
        make_loss = _optional("torchshield.robust.training", "make_loss", "adversarial training")
        loss_fn = make_loss(cfg.adversarial or cfg.augment, bounds=data.input_bounds)
    engine = None
    if cfg.privacy is not None:
        from torchshield.train.dp import PrivacyConfig, make_private

        engine = make_private(model, config=PrivacyConfig(**cfg.privacy), dataset_size=len(data.train),
                              batch_size=cfg.batch_size, epochs=cfg.epochs)
        model = engine.model
        messages += engine.messages
    regularizers: list[Regularizer] = []
    watermark_record = None
    if cfg.watermark:
        make_regularizer = _optional("torchshield.model.watermark.training", "make_regularizer",
                                     "watermark embedding")
        from torchshield.crypto.keys import resolve_master_key

        key = resolve_master_key(key_file=cfg.output.key_file, required=True)
        regularizers, watermark_record = make_regularizer(cfg.watermark, model, key)
        regularizers = list(regularizers)
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    loader = data.train.loader(cfg.batch_size, shuffle=True, seed=cfg.seed)
    callbacks = [on_epoch] if on_epoch else []
    try:
        result = fit(model, loader, epochs=cfg.epochs, optimizer=optimizer, loss_fn=loss_fn,
                     regularizers=regularizers, callbacks=callbacks, device=cfg.device, progress=progress,
                     privacy=engine)
    finally:
        if engine is not None:
            engine.close()
    metrics = {"train": evaluate(model, data.train.loader(1024), device=cfg.device),
               "test": evaluate(model, data.test.loader(1024), device=cfg.device) if len(data.test) else None}
    privacy = engine.record() if engine is not None else None
    bundle = _save(cfg, model, data, metrics, result.to_dict(), privacy, watermark_record)
    return RunResult(bundle, metrics, result.to_dict(), privacy, messages)


def _save(cfg: TrainConfig, model: torch.nn.Module, data: Any, metrics: dict[str, Any],
          training: dict[str, Any], privacy: dict[str, Any] | None, watermark: Any) -> Path:
    from torchshield.model.bundle import save

    cfg.output.bundle.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in cfg.raw.items() if k != "output"}  # paths to key files stay out of the manifest
    metadata = {"config": config, "metrics": metrics, "training": {k: v for k, v in training.items()
                                                                    if k != "loss_history"},
                "loss_history": training.get("loss_history", []), "data": data.describe(),
                "model": {"spec": cfg.model, "input_shape": list(data.input_shape),
                          "num_classes": data.num_classes}}
    provenance = {"tool": f"torchshield {__version__}", "command": "train",
                  "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                  "torch": torch.__version__, "python": platform.python_version(),
                  "data_fingerprint": data.fingerprint, "seed": cfg.seed}
    wm = watermark.to_dict() if hasattr(watermark, "to_dict") else watermark
    return save(model, cfg.output.bundle, key=cfg.output.key_file, sign_with=cfg.output.signing_key,
                metadata=metadata, privacy=privacy, watermark=wm, provenance=provenance)
