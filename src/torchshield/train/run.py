"""One training run from a validated config: data -> model -> (DP) -> fit -> evaluate -> signed bundle.

Sections that other capabilities own are dispatched lazily (``adversarial:``/``augment:`` to
``torchshield.robust.training``, ``watermark:`` to ``torchshield.model.watermark.training``), so
a build without them still trains and says clearly what is missing when a config asks for it.

What a DP bundle publishes. Its manifest travels with the model, so under ``privacy:`` it holds
nothing computed from the private rows beyond the accounted release: no data fingerprint, no
row counts, no training loss or accuracy (shown to the owner in the command's output only), only
declared bounds, classes and normalisation (``nn.datasets``). The sample rate needs the size
of the training set, which add/remove-DP treats as private: it is a declared public
``privacy.dataset_size`` or a count released with the discrete Laplace mechanism and charged
to the same epsilon (``releases`` in the record). Which rows trained goes to a split file beside
the bundle (``<bundle>.split.json``, mode 0600): the owner's, for ``privacy audit``; a DP bundle
must not carry it."""

from __future__ import annotations

import datetime as _dt
import importlib
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from torchshield._version import __version__
from torchshield.crypto.keys import MasterKey
from torchshield.errors import InputError, KeyMaterialError
from torchshield.nn.datasets import load_dataset
from torchshield.nn.loop import EpochEnd, ProgressFactory, Regularizer, evaluate, fit
from torchshield.nn.split import write_split
from torchshield.nn.zoo import build_model
from torchshield.train.config import TrainConfig, build_optimizer
from torchshield.train.result import RunResult, bundle_key, public_size, refuse_existing_outputs

__all__ = ["RunResult", "train_from_config"]


def _optional(module: str, attr: str, what: str) -> Callable[..., Any]:
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise InputError(f"{what} is not available in this build",
                             hint=f"remove that section, or install a torchshield with {module}") from None
        raise


def train_from_config(cfg: TrainConfig, *, progress: ProgressFactory | None = None,
                      on_epoch: Callable[[EpochEnd], Any] | None = None,
                      key: MasterKey | None = None) -> RunResult:
    """Train as ``cfg`` says. ``key``: the master key resolved at the edge (the CLI), for a
    watermark when the config names no ``output.key_file``; this function never reads the
    environment for a key."""
    if cfg.task != "tabular":  # text fine-tuning of a Hugging Face model (train.finetune)
        from torchshield.train.finetune import finetune

        tuned: RunResult = finetune(cfg, progress=progress, on_epoch=on_epoch)
        return tuned
    torch.manual_seed(cfg.seed)
    refuse_existing_outputs(cfg)
    private = cfg.privacy is not None
    data = load_dataset(cfg.data, private=private)
    model = build_model(cfg.model, in_shape=data.input_shape, num_classes=data.num_classes)
    messages: list[str] = []
    loss_fn = None
    if cfg.adversarial or cfg.augment:
        make_loss = _optional("torchshield.robust.training", "make_loss", "adversarial training")
        loss_fn = make_loss(cfg.adversarial or cfg.augment, bounds=data.input_bounds)
    engine = None
    releases: list[dict[str, Any]] = []
    if cfg.privacy is not None:
        from torchshield.train.dp import PrivacyConfig, make_private

        settings = dict(cfg.privacy)
        size, releases = public_size(settings, data, cfg.batch_size)
        spent_on_releases = sum(r["epsilon"] for r in releases)
        settings["epsilon"] = settings["epsilon"] - spent_on_releases
        engine = make_private(model, config=PrivacyConfig(**settings), dataset_size=size,
                              batch_size=cfg.batch_size, epochs=cfg.epochs)
        model = engine.model
        messages += engine.messages
    regularizers: list[Regularizer] = []
    watermark_record = None
    file_key = bundle_key(cfg)  # read once: the watermark and the encrypted bundle share it
    if cfg.watermark:
        make_regularizer = _optional("torchshield.model.watermark.training", "make_regularizer",
                                     "watermark embedding")
        mark_key = file_key or key
        if mark_key is None:
            raise KeyMaterialError("watermark: embedding a mark needs the master key",
                                   hint="set output.key_file in the config, or set TORCHSHIELD_KEY_FILE / "
                                        "TORCHSHIELD_KEY for the CLI")
        trigger_inputs = _optional("torchshield.model.watermark.inputs", "TriggerInputs", "watermark embedding")
        spec = trigger_inputs(tuple(data.input_shape), *data.input_bounds)  # triggers in the data's shape and range
        regularizers, watermark_record = make_regularizer(cfg.watermark, model, mark_key, inputs=spec)
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
    if privacy is not None:  # basic composition: the releases' epsilons add to DP-SGD's
        privacy["epsilon"] += sum(r["epsilon"] for r in releases)
        privacy["target_epsilon"] = float(cfg.privacy["epsilon"])
        privacy["releases"] = releases
    bundle = _save(cfg, model, data, metrics, result.to_dict(), privacy, watermark_record, file_key)
    split = write_split(bundle, data, private=private)
    if split is not None:
        messages.append(f"rows trained on: {split} (keep it private: it says who is in the training set)")
    return RunResult(bundle, metrics, result.to_dict(), privacy, messages)


def _save(cfg: TrainConfig, model: torch.nn.Module, data: Any, metrics: dict[str, Any],
          training: dict[str, Any], privacy: dict[str, Any] | None, watermark: Any, key: Any) -> Path:
    from torchshield.model.bundle import save

    cfg.output.bundle.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in cfg.raw.items() if k != "output"}  # paths to key files stay out of the manifest
    private = privacy is not None
    metadata = {"config": config, "metrics": metrics, "training": {k: v for k, v in training.items()
                                                                    if k != "loss_history"},
                "loss_history": training.get("loss_history", []), "data": data.describe(private=private),
                "model": {"spec": cfg.model, "input_shape": list(data.input_shape),
                          "num_classes": data.num_classes}}
    provenance = {"tool": f"torchshield {__version__}", "command": "train",
                  "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                  "torch": torch.__version__, "python": platform.python_version(),
                  "data_fingerprint": data.fingerprint, "seed": cfg.seed}
    if private:  # only the accounted release leaves (module docstring)
        metadata["metrics"] = {"withheld": "computed on private rows without DP; shown to the owner by "
                                           "'torchshield train' only"}
        metadata["training"] = {k: training[k] for k in ("epochs", "steps") if k in training}
        metadata.pop("loss_history")
        provenance.pop("data_fingerprint")
    wm = watermark.to_dict() if hasattr(watermark, "to_dict") else watermark
    return save(model, cfg.output.bundle, key=key, sign_with=cfg.output.signing_key,
                metadata=metadata, privacy=privacy, watermark=wm, provenance=provenance)
