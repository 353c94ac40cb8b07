"""Rebuild a trained model, its preprocessing and its training recipe from a ``.tsb`` manifest.

The privacy audit needs all three: the model to attack, new rows preprocessed exactly as in
training, and shadow models trained the same way (same architecture, optimizer, epochs and,
for a DP model, the same noise) for LiRA."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torchshield.errors import FormatError, InputError
from torchshield.model.sources.records import dp_claim
from torchshield.nn.datasets import read_table, table_to_tensors
from torchshield.nn.loop import fit
from torchshield.nn.zoo import build_model
from torchshield.train.config import build_optimizer

__all__ = ["load_trained", "read_rows", "shadow_trainer"]


def _section(manifest: dict[str, Any], path: Any) -> dict[str, Any]:
    meta = manifest.get("metadata") or {}
    if meta.get("task") in ("sequence-classification", "causal-lm"):
        raise InputError(f"{path}: a {meta['task']} fine-tune of a Hugging Face model; this command takes models "
                         "trained on tables or images only", hint="load it with torchshield.load_model(PATH)")
    if "model" not in meta or "data" not in meta or "config" not in meta:
        raise FormatError(f"{path}: the bundle does not say how it was trained",
                          hint="audit bundles written by 'torchshield train'")
    return meta


def load_trained(path: str | Path, *, key: Any = None, verify_with: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model in bundle ``path`` (built from its recorded spec) and the bundle's manifest."""
    from torchshield.model.bundle import inspect, load

    manifest = inspect(path).manifest
    meta = _section(manifest, path)
    spec = meta["model"]
    model = build_model(spec["spec"], in_shape=spec["input_shape"], num_classes=spec["num_classes"])
    tensors = load(path, key=key, verify_with=verify_with)
    if (manifest.get("privacy") or {}).get("model_fixes"):
        from torchshield.train.dp import fix_model  # BatchNorm was replaced before DP training

        model = fix_model(model)[0]
    try:
        model.load_state_dict({k: v.clone() for k, v in tensors.items()})
    except RuntimeError as exc:
        raise FormatError(f"{path}: tensors do not fit the recorded model spec ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, manifest


def read_rows(path: str | Path, manifest: dict[str, Any], *, label: str | None = None) -> tuple[Tensor, Tensor]:
    """Rows of a CSV/Parquet file, preprocessed as the bundle's training data was."""
    data = manifest["metadata"]["data"]
    norm = data.get("normalization") or {}
    label = label or norm.get("label") or "label"
    features = data.get("feature_names") or []
    df = read_table(path)
    if not features:
        features = [c for c in df.columns if c != label]
    classes = data.get("classes") or None
    x, y = table_to_tensors(df, label=label, features=features, normalization=norm, classes=classes,
                            bounds=norm.get("bounds"), source=str(path))
    shape = tuple(data["input_shape"])
    if x.shape[1] != math.prod(shape):
        raise InputError(f"{path}: {x.shape[1]} feature columns but the model takes {math.prod(shape)}")
    return x.view(-1, *shape), y


def shadow_trainer(manifest: dict[str, Any]) -> Any:
    """A ``(x, y, seed) -> model`` function that repeats the bundle's training recipe on new data."""
    meta = manifest["metadata"]
    cfg = meta["config"]
    spec = meta["model"]
    privacy = dp_claim(manifest)

    def train(x: Tensor, y: Tensor, seed: int) -> nn.Module:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small shadow models: thread start-up and spinning cost more than they save
        try:
            return _train(x, y, seed)
        finally:
            torch.set_num_threads(threads)

    def _train(x: Tensor, y: Tensor, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = build_model(spec["spec"], in_shape=spec["input_shape"], num_classes=spec["num_classes"])
        batch = min(int(cfg.get("batch_size", 64)), len(y))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
        engine = None
        if privacy:
            from torchshield.train.dp import PrivacyConfig, make_private

            # same noise multiplier and clipping as the target; the shadow's own epsilon is irrelevant
            pc = PrivacyConfig(epsilon=1e9, delta=min(privacy["delta"], 0.5 / len(y)),
                               max_grad_norm=privacy["max_grad_norm"], noise_multiplier=privacy["noise_multiplier"],
                               accountant="rdp", seed=seed, insecure_seed_for_tests=True)  # never released
            engine = make_private(model, config=pc, dataset_size=len(y), batch_size=batch,
                                  epochs=int(cfg.get("epochs", 1)))
            model = engine.model
        opt_spec = {"name": "sgd", "lr": 0.05, **(cfg.get("optimizer") or {})}
        optimizer = build_optimizer(model.parameters(), {k: (float(v) if k != "name" else v)
                                                         for k, v in opt_spec.items()})
        fit(model, loader, epochs=int(cfg.get("epochs", 1)), optimizer=optimizer, privacy=engine)
        if engine is not None:
            engine.close()
        return model.eval()

    return train
